package ktlsbridge

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"testing"

	"kvpn/internal/race"
)

// TestSealOpenAllocs: the data path allocates nothing.
func TestSealOpenAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts do not hold under the race detector")
		return
	}
	for _, kind := range ktKinds {
		se, op := ktSealerOpener(t, ktTestKeys(kind, 4, 0))
		off := se.Headroom()
		buf := make([]byte, off+1400+se.Tailroom())
		var err error
		allocs := testing.AllocsPerRun(200, func() {
			var rec []byte
			if rec, err = se.Seal(buf, off, 1400, contentApplicationData); err == nil {
				_, _, err = op.Open(rec)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if allocs != 0 {
			t.Errorf("%v: %v allocations per Seal+Open, want 0", kind, allocs)
		}
		n, err := RecordLen(buf)
		allocs = testing.AllocsPerRun(100, func() { n, err = RecordLen(buf) })
		if allocs != 0 || err != nil || n == 0 {
			t.Errorf("RecordLen: %v allocations, %d, %v", allocs, n, err)
		}
	}
}

// benchSealOpen seals a payload and opens the record again in the same
// buffer, as the two ends would.
func benchSealOpen(b *testing.B, kind ktKind, size int) {
	se, op := ktSealerOpener(b, ktTestKeys(kind, 5, 0))
	off := se.Headroom()
	buf := make([]byte, off+size+se.Tailroom())
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		rec, err := se.Seal(buf, off, size, contentApplicationData)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := op.Open(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealOpen: one Seal and one Open per payload (so MB/s counts the
// payload once for both).
func BenchmarkSealOpen(b *testing.B) {
	for _, kind := range []ktKind{
		{tls.VersionTLS13, CipherAES128GCM},
		{tls.VersionTLS12, CipherAES128GCM},
		{tls.VersionTLS13, CipherChaCha20Poly1305},
	} {
		for _, size := range []int{1400, MaxPlaintext} {
			b.Run(fmt.Sprintf("%v/%d", kind, size), func(b *testing.B) { benchSealOpen(b, kind, size) })
		}
	}
}

// BenchmarkRawGCM is the floor: crypto/cipher's AES-128-GCM sealing and
// opening in place with a fresh nonce each time and 5 bytes of additional
// data, without a record layer.
func BenchmarkRawGCM(b *testing.B) {
	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1400, MaxPlaintext} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			buf := make([]byte, size+aead.Overhead())
			var nonce [12]byte
			var aad [5]byte
			var seq uint64
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				seq++
				binary.BigEndian.PutUint64(nonce[4:], seq)
				ct := aead.Seal(buf[:0], nonce[:], buf[:size], aad[:])
				if _, err := aead.Open(ct[:0], nonce[:], ct, aad[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package recordlayer

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

const benchPayload = 1400 // an MTU-size tunnelled packet

// benchSealOpen seals a payload and opens the record again, in one buffer,
// as the two ends of the data channel would.
func benchSealOpen(b *testing.B, s Suite) {
	se, op := pair(b, s, 0)
	benchSealOpenWith(b, se, op)
}

func benchSealOpenWith(b *testing.B, se *Sealer, op *Opener) {
	off := se.Headroom()
	buf := make([]byte, off+benchPayload+se.Tailroom())
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	for b.Loop() {
		rec, err := se.Seal(buf, off, benchPayload, ApplicationData)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := op.Open(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealOpen(b *testing.B)         { benchSealOpen(b, TLS_PSK_WITH_AES_128_GCM_SHA256) }
func BenchmarkSealOpenChaCha20(b *testing.B) { benchSealOpen(b, TLS_PSK_WITH_CHACHA20_POLY1305_SHA256) }

// The same with connection IDs (RFC 9146): a longer header and AAD, from a
// pooled scratch, and the inner content type.
func BenchmarkSealOpenCID(b *testing.B) {
	se, op := pairCID(b, TLS_PSK_WITH_AES_128_GCM_SHA256, 0)
	benchSealOpenWith(b, se, op)
}

func BenchmarkSealOpenCIDChaCha20(b *testing.B) {
	se, op := pairCID(b, TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, 0)
	benchSealOpenWith(b, se, op)
}

// benchRaw is the same work with the bare AEAD: Seal and Open in place on
// one buffer, a fresh nonce each time, no record layer.
func benchRaw(b *testing.B, a cipher.AEAD) {
	buf := make([]byte, benchPayload+16)
	var nonce [12]byte
	var aad [13]byte
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	var seq uint64
	for b.Loop() {
		seq++
		binary.BigEndian.PutUint64(nonce[4:], seq)
		binary.BigEndian.PutUint64(aad[:], seq)
		ct := a.Seal(buf[:0], nonce[:], buf[:benchPayload], aad[:])
		if _, err := a.Open(ct[:0], nonce[:], ct, aad[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawGCM(b *testing.B) {
	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		b.Fatal(err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	benchRaw(b, a)
}

func BenchmarkRawChaCha20(b *testing.B) {
	a, err := chacha20poly1305.New(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	benchRaw(b, a)
}

// BenchmarkSealParallel: one Sealer shared by all goroutines (the atomic
// sequence counter is the only shared write).
func BenchmarkSealParallel(b *testing.B) {
	se, _ := pair(b, TLS_PSK_WITH_AES_128_GCM_SHA256, 0)
	off := se.Headroom()
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, off+benchPayload+Tailroom)
		for pb.Next() {
			if _, err := se.Seal(buf, off, benchPayload, ApplicationData); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

package recordlayer

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"testing"

	"kvpn/internal/race"

	"golang.org/x/crypto/chacha20poly1305"
)

// Two connection IDs of different lengths, so that a direction mix-up
// cannot go unnoticed.
var (
	testCIDA = []byte{0xca, 0xfe, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06} // a asked for it
	testCIDB = []byte{0xbe, 0xef, 0x09, 0x08, 0x07}                   // b asked for it
)

// testKeysCID is testKeys with connection IDs in both directions: a sends
// b's CID and expects its own, and b the other way round.
func testKeysCID(s Suite) (a, b Keys) {
	a, b = testKeys(s)
	a.LocalCID, a.RemoteCID = testCIDB, testCIDA
	b.LocalCID, b.RemoteCID = testCIDA, testCIDB
	return a, b
}

// pairCID is pair with connection IDs: a Sealer with a's keys, writing
// testCIDB, and the Opener of b, expecting it.
func pairCID(t testing.TB, s Suite, start uint64) (*Sealer, *Opener) {
	t.Helper()
	a, b := testKeysCID(s)
	return pairOf(t, a, b, start)
}

// cidAEAD builds the AEAD and nonce of a record independently of the
// package: RFC 5288 (GCM, explicit nonce epoch||seq) or RFC 7905.
func cidAEAD(t *testing.T, s Suite, key, iv []byte, epoch uint16, seq uint64) (aead cipher.AEAD, nonce, explicit []byte) {
	t.Helper()
	es := binary.BigEndian.AppendUint64(nil, uint64(epoch)<<48|seq)
	if mustParams(s).chacha {
		aead, _ = chacha20poly1305.New(key)
		nonce = bytes.Clone(iv)
		for i, b := range es {
			nonce[4+i] ^= b
		}
		return aead, nonce, nil
	}
	block, _ := aes.NewCipher(key)
	aead, _ = cipher.NewGCM(block)
	return aead, append(bytes.Clone(iv), es...), es
}

// rfc9146Record builds a tls12_cid record straight from RFC 9146 sections
// 4 and 5 with crypto/cipher, with the given inner plaintext.
func rfc9146Record(t *testing.T, s Suite, key, iv, cid []byte, epoch uint16, seq uint64, inner []byte) []byte {
	t.Helper()
	seq6 := binary.BigEndian.AppendUint64(nil, seq)[2:]
	var aad []byte
	aad = append(aad, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // seq_num_placeholder
	aad = append(aad, 25, byte(len(cid)), 25, 0xfe, 0xfd)             // tls12_cid, cid_length, tls12_cid, version
	aad = binary.BigEndian.AppendUint16(aad, epoch)
	aad = append(aad, seq6...)
	aad = append(aad, cid...)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(inner)))
	aead, nonce, explicit := cidAEAD(t, s, key, iv, epoch, seq)
	body := append(explicit, aead.Seal(nil, nonce, inner, aad)...)
	rec := []byte{25, 0xfe, 0xfd}
	rec = binary.BigEndian.AppendUint16(rec, epoch)
	rec = append(rec, seq6...)
	rec = append(rec, cid...)
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(body)))
	return append(rec, body...)
}

func TestCIDSizes(t *testing.T) {
	for _, s := range testSuites {
		se, _ := pairCID(t, s, 0)
		if se.Headroom() != s.Headroom()+len(testCIDB) || se.Tailroom() != Tailroom+1 ||
			se.Overhead() != s.Overhead()+len(testCIDB)+1 || !bytes.Equal(se.CID(), testCIDB) {
			t.Errorf("%v: headroom %d tailroom %d overhead %d cid %x", s, se.Headroom(), se.Tailroom(), se.Overhead(), se.CID())
		}
		plain, op := pair(t, s, 0)
		if plain.Headroom() != s.Headroom() || plain.Tailroom() != Tailroom || plain.Overhead() != s.Overhead() ||
			plain.CID() != nil || op.CID() != nil {
			t.Errorf("%v without CID: headroom %d tailroom %d overhead %d", s, plain.Headroom(), plain.Tailroom(), plain.Overhead())
		}
	}
}

// TestCIDKnownAnswer: Seal's tls12_cid records are byte for byte those
// built independently from RFC 9146, and Open takes such records, padding
// included.
func TestCIDKnownAnswer(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			a, b := testKeysCID(s)
			const seq = 0x0000_1234_5678_9abc
			se, err := NewSealer(a, seq)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("hello, data channel")
			rec := sealInto(t, se, msg, ApplicationData)
			want := rfc9146Record(t, s, a.LocalKey, a.LocalIV, testCIDB, 1, seq, append(bytes.Clone(msg), 23))
			if !bytes.Equal(rec, want) {
				t.Fatalf("record\n% x\nwant\n% x", rec, want)
			}

			op, err := NewOpener(b, 1024)
			if err != nil {
				t.Fatal(err)
			}
			// Zero padding after the real type is stripped (RFC 9146
			// section 4); a zero-length content is fine.
			for i, inner := range [][]byte{
				append(bytes.Clone(msg), 21, 0, 0, 0, 0, 0, 0, 0),
				{23},
				{22, 0},
				append(append(bytes.Clone(msg), 0, 0, 23), make([]byte, 300)...), // zeros inside the content stay
			} {
				rec := rfc9146Record(t, s, a.LocalKey, a.LocalIV, testCIDB, 1, uint64(i+10), inner)
				ct, got, err := op.Open(rec)
				j := len(inner) - 1
				for inner[j] == 0 {
					j--
				}
				if err != nil || ct != ContentType(inner[j]) || !bytes.Equal(got, inner[:j]) {
					t.Fatalf("padded record %d: %v %x %v", i, ct, got, err)
				}
			}
			// An inner plaintext without a content type (all zeros).
			for i, inner := range [][]byte{{0}, make([]byte, 40)} {
				rec := rfc9146Record(t, s, a.LocalKey, a.LocalIV, testCIDB, 1, uint64(i+20), inner)
				if _, _, err := op.Open(rec); !errors.Is(err, ErrTruncated) {
					t.Fatalf("all-zero inner plaintext: %v", err)
				}
			}
			// It did not enter the window: a good record with that number opens.
			rec = rfc9146Record(t, s, a.LocalKey, a.LocalIV, testCIDB, 1, 20, []byte{1, 2, 23})
			if ct, got, err := op.Open(rec); err != nil || ct != ApplicationData || !bytes.Equal(got, []byte{1, 2}) {
				t.Fatalf("after the refused record: %v %x %v", ct, got, err)
			}
			// Content over 2^14 bytes, authenticated, is still refused.
			big := append(make([]byte, MaxPlaintext+1), 23)
			rec = rfc9146Record(t, s, a.LocalKey, a.LocalIV, testCIDB, 1, 30, big)
			if _, _, err := op.Open(rec); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("2^14+1 bytes of content: %v", err)
			}
		})
	}
}

func TestCIDSealOpenRoundTrip(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pairCID(t, s, 5)
			const off = 60
			for i, n := range []int{0, 1, 15, 16, 17, 1400, MaxPlaintext} {
				msg := payload(n, byte(n))
				buf := make([]byte, off+n+se.Tailroom()+9)
				copy(buf[off:], msg)
				rec, err := se.Seal(buf, off, n, ContentType(21+n%3))
				if err != nil {
					t.Fatal(err)
				}
				if &rec[0] != &buf[off-se.Headroom()] || len(rec) != n+se.Overhead() {
					t.Fatal("record not where the headroom is")
				}
				ct, epoch, seq, cid, length, err := ParseCIDHeader(rec, len(testCIDB))
				if err != nil || ct != ConnectionID || epoch != 1 || seq != uint64(5+i) ||
					!bytes.Equal(cid, testCIDB) || length != len(rec)-HeaderLen-len(testCIDB) {
					t.Fatalf("header: %v %d %d %x %d %v", ct, epoch, seq, cid, length, err)
				}
				hdr := bytes.Clone(rec[:HeaderLen+len(testCIDB)])
				ct, got, err := op.Open(rec)
				if err != nil {
					t.Fatalf("Open %d bytes: %v", n, err)
				}
				if ct != ContentType(21+n%3) || !bytes.Equal(got, msg) {
					t.Fatalf("got %v %d bytes", ct, len(got))
				}
				if n > 0 && &got[0] != &buf[off] {
					t.Fatal("plaintext does not alias the record")
				}
				if !bytes.Equal(rec[:len(hdr)], hdr) {
					t.Fatal("Open changed the header")
				}
			}
		})
	}
}

func TestCIDSealErrors(t *testing.T) {
	se, op := pairCID(t, TLS_PSK_WITH_AES_128_GCM_SHA256, 0)
	h := se.Headroom() // 21 + 5
	buf := make([]byte, 100)
	for _, tc := range []struct {
		name   string
		off, n int
	}{
		{"no headroom", h - 1, 10},
		{"no room for the type byte", h, 100 - h - 16},
		{"no tailroom", h, 100 - h - 15},
	} {
		if _, err := se.Seal(buf, tc.off, tc.n, ApplicationData); !errors.Is(err, ErrRoom) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	rec, err := se.Seal(buf, h, 100-h-17, ApplicationData)
	if err != nil || len(rec) != 100 {
		t.Fatalf("exact fit: %d bytes, %v", len(rec), err)
	}
	if _, got, err := op.Open(rec); err != nil || len(got) != 100-h-17 {
		t.Fatalf("exact fit: %v", err)
	}
	a, _ := testKeysCID(TLS_PSK_WITH_AES_128_GCM_SHA256)
	a.LocalCID = make([]byte, 256)
	if _, err := NewSealer(a, 0); err == nil {
		t.Error("256-byte CID accepted")
	}
	a.RemoteCID = make([]byte, 256)
	if _, err := NewOpener(a, 0); err == nil {
		t.Error("256-byte CID accepted")
	}
	// The longest CID works.
	a, b := testKeysCID(TLS_PSK_WITH_CHACHA20_POLY1305_SHA256)
	a.LocalCID, b.RemoteCID = payload(255, 1), payload(255, 1)
	se, _ = NewSealer(a, 0)
	op, _ = NewOpener(b, 0)
	if _, got, err := op.Open(sealInto(t, se, []byte("x"), Alert)); err != nil || string(got) != "x" {
		t.Fatalf("255-byte CID: %v", err)
	}
}

// TestNoAllocsCID: sealing and opening tls12_cid records, and refusing a
// replay or a wrong CID, allocate nothing.
func TestNoAllocsCID(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pairCID(t, s, 0)
			rec := assertNoAllocs(t, se, op)
			rec[11] ^= 1
			if n := testing.AllocsPerRun(1000, func() {
				if _, _, err := op.Open(rec); !errors.Is(err, ErrCID) {
					t.Fatal(err)
				}
				if _, ok := PeekCID(rec, len(testCIDB)); !ok {
					t.Fatal("PeekCID")
				}
				if _, _, err := NextRecordCID(rec, len(testCIDB)); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("refusing a wrong CID, PeekCID, NextRecordCID: %v allocations", n)
			}
		})
	}
}

package recordlayer

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"testing"

	"kvpn/internal/race"
)

var cbcSuites = []Suite{TLS_RSA_WITH_AES_128_CBC_SHA, TLS_RSA_WITH_AES_256_CBC_SHA}

// cbcKeys returns mirrored CBC keys for version v.
func cbcKeys(s Suite, v uint16) (a, b Keys) {
	a, b = testKeys(s)
	m1, m2 := bytes.Repeat([]byte{0x33}, macLen), bytes.Repeat([]byte{0x44}, macLen)
	a.LocalMACKey, a.RemoteMACKey, a.Version = m1, m2, v
	b.LocalMACKey, b.RemoteMACKey, b.Version = m2, m1, v
	return a, b
}

// rawCBC builds a CBC record the long way, from the RFC's description,
// with the padding given (pad bytes including the length byte, each
// holding padVal) and the MAC optionally spoiled.
func rawCBC(k Keys, ct ContentType, seq uint64, payload []byte, pad int, padVal byte, badMAC bool) []byte {
	m := hmac.New(sha1.New, k.LocalMACKey)
	var pre [13]byte
	putMACPreamble(pre[:], ct, k.Version, k.Epoch, seq, len(payload))
	m.Write(pre[:])
	m.Write(payload)
	mac := m.Sum(nil)
	if badMAC {
		mac[3] ^= 1
	}
	pt := append(append(bytes.Clone(payload), mac...), bytes.Repeat([]byte{padVal}, pad)...)
	iv := bytes.Repeat([]byte{0x5a}, 16)
	block, _ := aes.NewCipher(k.LocalKey)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(pt, pt)
	rec := make([]byte, HeaderLen, HeaderLen+16+len(pt))
	rec[0] = byte(ct)
	binary.BigEndian.PutUint16(rec[1:3], k.Version)
	binary.BigEndian.PutUint16(rec[3:5], k.Epoch)
	putUint48(rec[5:11], seq)
	binary.BigEndian.PutUint16(rec[11:13], uint16(16+len(pt)))
	return append(append(rec, iv...), pt...)
}

func TestCBCRoundTrip(t *testing.T) {
	for _, s := range cbcSuites {
		for _, v := range []uint16{VersionDTLS09, VersionDTLS12} {
			a, b := cbcKeys(s, v)
			se, op := pairOf(t, a, b, 0)
			if se.Headroom() != HeaderLen+16 || se.Tailroom() != CBCTailroom {
				t.Fatalf("headroom %d tailroom %d", se.Headroom(), se.Tailroom())
			}
			for n := range 70 {
				p := payload(n, byte(n))
				rec := sealInto(t, se, p, ApplicationData)
				if binary.BigEndian.Uint16(rec[1:3]) != v || (len(rec)-HeaderLen-16)%16 != 0 {
					t.Fatalf("record version %x, length %d", rec[1:3], len(rec))
				}
				ct, got, err := op.Open(rec)
				if err != nil || ct != ApplicationData || !bytes.Equal(got, p) {
					t.Fatalf("%v %x n=%d: %v %v", s, v, n, ct, err)
				}
			}
			// A record built from the RFC's description opens too, with
			// the longest padding (RFC 5246 allows up to 255 bytes).
			rec := rawCBC(a, ApplicationData, 1000, []byte("hello"), 23+16*2, 23+16*2-1, false)
			if _, got, err := op.Open(rec); err != nil || string(got) != "hello" {
				t.Fatalf("raw record: %q %v", got, err)
			}
		}
	}
}

// TestCBCRejects: bad padding, bad MAC, short records, wrong version and
// replays are refused with the sentinels, without panicking, and do not
// move the replay window.
func TestCBCRejects(t *testing.T) {
	a, b := cbcKeys(TLS_RSA_WITH_AES_128_CBC_SHA, VersionDTLS09)
	se, op := pairOf(t, a, b, 0)
	// Keys b seals what op (keys b's peer) opens: op opens a's records.
	good := rawCBC(a, ApplicationData, 5, []byte("abc"), 9, 8, false)
	cases := []struct {
		name string
		rec  []byte
		want error
	}{
		{"bad padding value", rawCBC(a, ApplicationData, 6, []byte("abc"), 9, 7, false), ErrAuth},
		{"padding longer than the record", rawCBC(a, ApplicationData, 7, []byte("abc"), 9, 200, false), ErrAuth},
		{"bad MAC", rawCBC(a, ApplicationData, 8, []byte("abc"), 9, 8, true), ErrAuth},
		{"short", good[:HeaderLen+16], ErrTruncated},
		{"header only", good[:HeaderLen], ErrTruncated},
		{"not whole blocks", append(bytes.Clone(good), 1, 2, 3), ErrTruncated},
		{"wrong version", func() []byte { r := bytes.Clone(good); r[1], r[2] = 0xfe, 0xfd; return r }(), ErrVersion},
	}
	for _, c := range cases {
		rec := bytes.Clone(c.rec)
		if len(rec) >= HeaderLen && c.name == "not whole blocks" {
			binary.BigEndian.PutUint16(rec[11:13], uint16(len(rec)-HeaderLen))
		}
		if c.name == "short" {
			binary.BigEndian.PutUint16(rec[11:13], 16)
		}
		if _, _, err := op.Open(rec); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, _, err := op.Open(bytes.Clone(good)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := op.Open(bytes.Clone(good)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	// A forged record with a fresh number did not consume that number.
	if _, _, err := op.Open(rawCBC(a, ApplicationData, 8, []byte("x"), 11, 10, false)); err != nil {
		t.Fatalf("seq 8 after its forgery: %v", err)
	}
	_ = se
}

func TestCBCNoAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race")
		return
	}
	for _, s := range cbcSuites {
		a, b := cbcKeys(s, VersionDTLS09)
		se, op := pairOf(t, a, b, 0)
		assertNoAllocs(t, se, op)
	}
}

func FuzzOpenCBC(f *testing.F) {
	a, _ := cbcKeys(TLS_RSA_WITH_AES_128_CBC_SHA, VersionDTLS09)
	f.Add(rawCBC(a, ApplicationData, 1, []byte("abc"), 9, 8, false))
	f.Add(rawCBC(a, ApplicationData, 2, []byte("abc"), 9, 7, false))
	f.Add(rawCBC(a, ApplicationData, 3, nil, 12, 11, true))
	f.Add([]byte{23, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, rec []byte) {
		_, b := cbcKeys(TLS_RSA_WITH_AES_128_CBC_SHA, VersionDTLS09)
		op, err := NewOpener(b, 64)
		if err != nil {
			t.Fatal(err)
		}
		in := bytes.Clone(rec)
		ct, pt, err := op.Open(in)
		if err == nil && (ct != ContentType(rec[0]) || len(pt) > len(rec)) {
			t.Fatalf("opened %v %d bytes from %d", ct, len(pt), len(rec))
		}
	})
}

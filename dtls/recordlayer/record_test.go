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

// testKeys returns a pair of mirrored Keys (a's local is b's remote) with
// fixed key material.
func testKeys(s Suite) (a, b Keys) {
	p, ok := s.params()
	if !ok {
		panic("unsupported suite in test")
	}
	k1 := bytes.Repeat([]byte{0x11}, p.keyLen)
	k2 := bytes.Repeat([]byte{0x22}, p.keyLen)
	iv1 := bytes.Repeat([]byte{0xa1}, p.ivLen)
	iv2 := bytes.Repeat([]byte{0xb2}, p.ivLen)
	a = Keys{Suite: s, Epoch: 1, LocalKey: k1, LocalIV: iv1, RemoteKey: k2, RemoteIV: iv2}
	b = Keys{Suite: s, Epoch: 1, LocalKey: k2, LocalIV: iv2, RemoteKey: k1, RemoteIV: iv1}
	return a, b
}

var testSuites = []Suite{
	TLS_PSK_WITH_AES_128_GCM_SHA256,
	TLS_PSK_WITH_AES_256_GCM_SHA384,
	TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
}

// pair returns a Sealer with a's keys and an Opener with b's keys: a
// sealer and the opener of the other end.
func pair(t testing.TB, s Suite, start uint64) (*Sealer, *Opener) {
	t.Helper()
	a, b := testKeys(s)
	return pairOf(t, a, b, start)
}

// pairOf returns a Sealer with keys a starting at sequence start and an
// Opener with keys b.
func pairOf(t testing.TB, a, b Keys, start uint64) (*Sealer, *Opener) {
	t.Helper()
	se, err := NewSealer(a, start)
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOpener(b, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return se, op
}

func TestSuiteSizes(t *testing.T) {
	for _, tc := range []struct {
		s                  Suite
		overhead, headroom int
	}{
		{TLS_PSK_WITH_AES_128_GCM_SHA256, 37, 21},
		{TLS_PSK_WITH_AES_256_GCM_SHA384, 37, 21},
		{TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, 37, 21},
		{TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, 29, 13},
		{TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, 29, 13},
		{Suite(0xc0a4), 37, 21}, // unknown: sized as GCM, the larger
	} {
		if got := tc.s.Overhead(); got != tc.overhead {
			t.Errorf("%v Overhead %d, want %d", tc.s, got, tc.overhead)
		}
		if got := tc.s.Headroom(); got != tc.headroom {
			t.Errorf("%v Headroom %d, want %d", tc.s, got, tc.headroom)
		}
	}
	if Suite(0xc0a4).Supported() || !TLS_PSK_WITH_AES_128_GCM_SHA256.Supported() {
		t.Error("Supported")
	}
	if TLS_PSK_WITH_CHACHA20_POLY1305_SHA256.String() != "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256" ||
		Suite(0xc0a4).String() != "Suite(0xc0a4)" {
		t.Error("String")
	}
}

// TestKnownAnswer checks the record bytes against an independent
// construction with crypto/cipher straight from RFC 5288 / RFC 7905, so a
// mistake shared by Seal and Open cannot hide.
func TestKnownAnswer(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			a, _ := testKeys(s)
			se, err := NewSealer(a, 0x0000_1234_5678_9abc)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("hello, data channel")
			rec := sealInto(t, se, msg, ApplicationData)

			seq := []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}
			header := append([]byte{23, 0xfe, 0xfd, 0, 1}, seq...)
			aad := append(append([]byte{0, 1}, seq...), 23, 0xfe, 0xfd, 0, byte(len(msg)))
			var aead cipher.AEAD
			var nonce, explicit []byte
			if mustParams(s).chacha {
				aead, _ = chacha20poly1305.New(a.LocalKey)
				nonce = bytes.Clone(a.LocalIV)
				for i, b := range append([]byte{0, 1}, seq...) {
					nonce[4+i] ^= b
				}
			} else {
				block, _ := aes.NewCipher(a.LocalKey)
				aead, _ = cipher.NewGCM(block)
				explicit = append([]byte{0, 1}, seq...)
				nonce = append(bytes.Clone(a.LocalIV), explicit...)
			}
			body := append(explicit, aead.Seal(nil, nonce, msg, aad)...)
			want := append(binary.BigEndian.AppendUint16(header, uint16(len(body))), body...)
			if !bytes.Equal(rec, want) {
				t.Fatalf("record\n% x\nwant\n% x", rec, want)
			}
		})
	}
}

func mustParams(s Suite) suiteParams {
	p, ok := s.params()
	if !ok {
		panic("unsupported suite in test")
	}
	return p
}

func TestSealOpenRoundTrip(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pair(t, s, 5)
			for _, n := range []int{0, 1, 15, 16, 17, 1400, MaxPlaintext} {
				msg := payload(n, byte(n))
				// Room beyond what is needed on both sides must not matter.
				buf := make([]byte, 40+n+Tailroom+9)
				copy(buf[40:], msg)
				rec, err := se.Seal(buf, 40, n, ApplicationData)
				if err != nil {
					t.Fatal(err)
				}
				if &rec[0] != &buf[40-s.Headroom()] || len(rec) != n+s.Overhead() {
					t.Fatal("record not where the headroom is")
				}
				if n > 0 && bytes.Equal(buf[40:40+n], msg) {
					t.Fatal("payload not encrypted in place")
				}
				hdr := bytes.Clone(rec[:HeaderLen])
				ct, got, err := op.Open(rec)
				if err != nil {
					t.Fatalf("Open %d bytes: %v", n, err)
				}
				if ct != ApplicationData || !bytes.Equal(got, msg) {
					t.Fatalf("got %v %d bytes", ct, len(got))
				}
				if n > 0 && &got[0] != &buf[40] {
					t.Fatal("plaintext does not alias the record")
				}
				if !bytes.Equal(rec[:HeaderLen], hdr) {
					t.Fatal("Open changed the header")
				}
			}
		})
	}
}

func TestSealErrors(t *testing.T) {
	se, _ := pair(t, TLS_PSK_WITH_AES_128_GCM_SHA256, 0)
	buf := make([]byte, 100)
	for _, tc := range []struct {
		name   string
		off, n int
		want   error
	}{
		{"no headroom", 20, 10, ErrRoom},
		{"no tailroom", 21, 100 - 21 - 15, ErrRoom},
		{"offset past end", 200, 0, ErrRoom},
		{"negative", 21, -1, ErrRoom},
		{"too large", 21, MaxPlaintext + 1, ErrTooLarge},
	} {
		if _, err := se.Seal(buf, tc.off, tc.n, ApplicationData); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if se.Next() != 0 {
		t.Error("a failed Seal used a sequence number")
	}
	if _, err := se.Seal(buf, 21, 100-21-16, ApplicationData); err != nil {
		t.Errorf("exact fit: %v", err)
	}

	// The last sequence number, then exhaustion (RFC 6347 section 4.1).
	a, b := testKeys(TLS_PSK_WITH_AES_128_GCM_SHA256)
	se, err := NewSealer(a, MaxSeq)
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOpener(b, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rec := sealInto(t, se, []byte("last"), ApplicationData)
	if _, _, seq, _, _ := ParseHeader(rec); seq != MaxSeq {
		t.Fatalf("seq %x", seq)
	}
	if _, got, err := op.Open(rec); err != nil || string(got) != "last" {
		t.Fatalf("open seq 2^48-1: %v", err)
	}
	if _, err := se.Seal(make([]byte, 100), 21, 4, ApplicationData); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("after 2^48-1: %v", err)
	}
	if _, err := NewSealer(a, MaxSeq+1); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("start 2^48: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	a, _ := testKeys(TLS_PSK_WITH_AES_128_GCM_SHA256)
	a.LocalSeq = 10
	if _, err := NewSealer(a, 9); err == nil {
		t.Error("sealer starting below pion's LocalSeq accepted")
	}
	if _, err := NewSealer(a, a.SealerStart()); err != nil {
		t.Error(err)
	}
	bad := a
	bad.Suite = Suite(0xc0a4)
	if _, err := NewSealer(bad, 1<<20); !errors.Is(err, ErrSuite) {
		t.Errorf("unknown suite: %v", err)
	}
	if _, err := NewOpener(bad, 1024); !errors.Is(err, ErrSuite) {
		t.Errorf("unknown suite: %v", err)
	}
	bad = a
	bad.LocalIV = make([]byte, 12)
	if _, err := NewSealer(bad, 1<<20); err == nil {
		t.Error("12-byte IV for GCM accepted")
	}
	bad = a
	bad.RemoteKey = bad.RemoteKey[:15]
	if _, err := NewOpener(bad, 1024); err == nil {
		t.Error("short key accepted")
	}
	bad = a
	bad.Epoch = 0
	if _, err := NewSealer(bad, 1<<20); err == nil {
		t.Error("epoch 0 accepted")
	}
}

// TestNoAllocs: sealing and opening, and refusing a replay, allocate
// nothing.
func TestNoAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pair(t, s, 0)
			assertNoAllocs(t, se, op)
		})
	}
}

// assertNoAllocs checks that se sealing 1400-byte records, op opening
// them and op refusing a replay allocate nothing, and returns the last
// record sealed (opened once) for further checks.
func assertNoAllocs(t *testing.T, se *Sealer, op *Opener) []byte {
	t.Helper()
	buf := make([]byte, se.Headroom()+1400+se.Tailroom())
	off := se.Headroom()
	var rec []byte
	seal := func() {
		var err error
		if rec, err = se.Seal(buf, off, 1400, ApplicationData); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(1000, seal); n != 0 {
		t.Errorf("Seal: %v allocations", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		seal()
		if _, _, err := op.Open(rec); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Seal+Open: %v allocations", n)
	}
	seal()
	op.Open(rec)
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, err := op.Open(rec); !errors.Is(err, ErrReplay) {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("refusing a replay: %v allocations", n)
	}
	return rec
}

package ktlsbridge

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"

	"kvpn/record"
)

// TestSealOpen: every kind and size round-trips with the documented head
// and tail room, record layout and sequence numbers.
func TestSealOpen(t *testing.T) {
	for _, kind := range ktKinds {
		t.Run(kind.String(), func(t *testing.T) {
			k := ktTestKeys(kind, 1, 7)
			se, op := ktSealerOpener(t, k)
			head, tail := 5, 16
			if kind.version == tls.VersionTLS12 && kind.cipher != CipherChaCha20Poly1305 {
				head += 8
			}
			if kind.version == tls.VersionTLS13 {
				tail++
			}
			if se.Headroom() != head || se.Tailroom() != tail {
				t.Fatalf("Headroom %d Tailroom %d, want %d %d", se.Headroom(), se.Tailroom(), head, tail)
			}
			for i, n := range []int{0, 1, 15, 16, 17, 1400, MaxPlaintext - 1, MaxPlaintext} {
				typ := uint8(contentApplicationData)
				if i == 1 {
					typ = contentAlert
				} else if i == 2 {
					typ = contentHandshake
				}
				const off = 40
				buf := make([]byte, off+n+tail+3) // more than needed is fine
				p := ktPayload(n, byte(i))
				copy(buf[off:], p)
				rec, err := se.Seal(buf, off, n, record.ContentType(typ))
				if err != nil {
					t.Fatalf("Seal %d: %v", n, err)
				}
				if len(rec) != head+n+tail || &rec[0] != &buf[off-head] {
					t.Fatalf("Seal %d: record of %d bytes at %p, want %d at %p", n, len(rec), &rec[0], head+n+tail, &buf[off-head])
				}
				l, err := RecordLen(rec)
				if err != nil || l != len(rec) {
					t.Fatalf("RecordLen: %d %v", l, err)
				}
				wantOuter := typ
				if kind.version == tls.VersionTLS13 {
					wantOuter = contentApplicationData
				}
				if rec[0] != wantOuter || rec[1] != 3 || rec[2] != 3 {
					t.Fatalf("header % x", rec[:5])
				}
				if head == 13 && binary.BigEndian.Uint64(rec[5:13]) != 7+uint64(i) {
					t.Fatalf("explicit nonce % x, want the sequence number %d", rec[5:13], 7+i)
				}
				if bytes.Contains(rec, p) && n >= 16 {
					t.Fatal("plaintext visible in the record")
				}
				gotTyp, pt, err := op.Open(rec)
				if err != nil || gotTyp != record.ContentType(typ) || !bytes.Equal(pt, p) {
					t.Fatalf("Open %d: type %d, %d bytes, %v", n, gotTyp, len(pt), err)
				}
				if n > 0 && &pt[0] != &buf[off] {
					t.Fatal("plaintext does not alias the record")
				}
			}
			if se.r.seq != 15 || op.r.seq != 15 {
				t.Fatalf("sequence numbers %d %d, want 15", se.r.seq, op.r.seq)
			}
		})
	}
}

// TestSealErrors: what Seal refuses.
func TestSealErrors(t *testing.T) {
	for _, kind := range ktKinds {
		t.Run(kind.String(), func(t *testing.T) {
			se, _ := ktSealerOpener(t, ktTestKeys(kind, 2, 0))
			h, tl := se.Headroom(), se.Tailroom()
			buf := make([]byte, h+MaxPlaintext+1+tl)
			for _, tc := range []struct {
				name   string
				buf    []byte
				off, n int
				typ    uint8
			}{
				{"too large", buf, h, MaxPlaintext + 1, contentApplicationData},
				{"negative", buf, h, -1, contentApplicationData},
				{"no headroom", buf, h - 1, 10, contentApplicationData},
				{"no tailroom", buf[:h+10+tl-1], h, 10, contentApplicationData},
				{"offset past the end", buf[:h], h + 1, 0, contentApplicationData},
				{"change cipher spec", buf, h, 1, contentChangeCipherSpec},
				{"unknown type", buf, h, 1, 24},
			} {
				if _, err := se.Seal(tc.buf, tc.off, tc.n, record.ContentType(tc.typ)); err == nil {
					t.Errorf("%s: no error", tc.name)
				}
			}
			if se.r.seq != 0 {
				t.Fatalf("failed Seals advanced the sequence number to %d", se.r.seq)
			}
			// The last sequence number is never used.
			se, op := ktSealerOpener(t, ktTestKeys(kind, 2, math.MaxUint64-1))
			rec, err := se.Seal(buf, h, 10, contentApplicationData)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := op.Open(rec); err != nil {
				t.Fatal(err)
			}
			if _, err := se.Seal(buf, h, 10, contentApplicationData); !errors.Is(err, errSeqExhausted) {
				t.Fatalf("Seal at 2^64-1: %v", err)
			}
			if _, _, err := op.Open(rec); !errors.Is(err, errSeqExhausted) {
				t.Fatalf("Open at 2^64-1: %v", err)
			}
		})
	}
	for _, k := range []Keys{
		{},
		{Version: tls.VersionTLS11, Cipher: CipherAES128GCM, Key: make([]byte, 16), IV: make([]byte, 12)},
		{Version: tls.VersionTLS13, Cipher: 9, Key: make([]byte, 16), IV: make([]byte, 12)},
		{Version: tls.VersionTLS13, Cipher: CipherAES128GCM, Key: make([]byte, 32), IV: make([]byte, 12)},
		{Version: tls.VersionTLS13, Cipher: CipherAES128GCM, Key: make([]byte, 16), IV: make([]byte, 4)},
		{Version: tls.VersionTLS12, Cipher: CipherAES128GCM, Key: make([]byte, 16), IV: make([]byte, 12)},
		{Version: tls.VersionTLS12, Cipher: CipherChaCha20Poly1305, Key: make([]byte, 32), IV: make([]byte, 4)},
	} {
		if _, err := NewSealer(k); err == nil {
			t.Errorf("NewSealer(%+v): no error", k)
		}
		if _, err := NewOpener(k); err == nil {
			t.Errorf("NewOpener(%+v): no error", k)
		}
	}
}

// ktCraft seals an arbitrary TLS 1.3 inner plaintext, or a TLS 1.2
// plaintext of any length, bypassing Seal's checks: what a broken or
// hostile peer could send.
func ktCraft(t testing.TB, k Keys, outer uint8, inner []byte) []byte {
	t.Helper()
	se, _ := ktSealerOpener(t, k)
	r := &se.r
	tag := r.aead.Overhead()
	var hdr []byte
	var body []byte
	switch {
	case r.tls13:
		n := len(inner) + tag
		hdr = []byte{outer, 3, 3, byte(n >> 8), byte(n)}
		body = r.aead.Seal(nil, r.seqNonce(), inner, hdr)
	case r.explicit:
		n := 8 + len(inner) + tag
		hdr = []byte{outer, 3, 3, byte(n >> 8), byte(n)}
		explicit := binary.BigEndian.AppendUint64(nil, r.seq)
		body = r.aead.Seal(explicit, r.explicitNonce(explicit), inner, r.aad12(outer, len(inner)))
	default:
		n := len(inner) + tag
		hdr = []byte{outer, 3, 3, byte(n >> 8), byte(n)}
		body = r.aead.Seal(nil, r.seqNonce(), inner, r.aad12(outer, len(inner)))
	}
	return append(hdr, body...)
}

// TestOpenErrors: what Open refuses, and TLS 1.3 padding.
func TestOpenErrors(t *testing.T) {
	for _, kind := range ktKinds {
		t.Run(kind.String(), func(t *testing.T) {
			k := ktTestKeys(kind, 3, 5)
			tls13 := kind.version == tls.VersionTLS13
			open := func(rec []byte) (uint8, []byte, error) {
				_, op := ktSealerOpener(t, k)
				ct, pt, err := op.Open(rec)
				return uint8(ct), pt, err
			}
			good := func(typ uint8, p []byte) []byte {
				if tls13 {
					return ktCraft(t, k, contentApplicationData, append(bytes.Clone(p), typ))
				}
				return ktCraft(t, k, typ, p)
			}
			rec := good(contentApplicationData, []byte("data"))
			if _, _, err := open(bytes.Clone(rec)); err != nil {
				t.Fatal(err)
			}
			check := func(name string, rec []byte, want error) {
				t.Helper()
				if _, _, err := open(rec); !errors.Is(err, want) {
					t.Errorf("%s: %v, want %v", name, err, want)
				}
			}
			check("empty", nil, errRecordLength)
			check("header only, 4 bytes", rec[:4], errRecordLength)
			check("truncated", bytes.Clone(rec[:len(rec)-1]), errRecordLength)
			check("extra byte", append(bytes.Clone(rec), 0), errRecordLength)
			v := bytes.Clone(rec)
			v[2] = 1
			check("version 0x0301", v, errBadVersion)
			check("too short for the tag", []byte{23, 3, 3, 0, 3, 1, 2, 3}, ErrBadRecordMAC)
			huge := make([]byte, RecordHeaderLen+maxRecordBody+1)
			copy(huge, []byte{23, 3, 3, byte((maxRecordBody + 1) >> 8), byte((maxRecordBody + 1) & 0xff)})
			check("body of 2^14+257", huge, errRecordOverflow)
			check("change cipher spec", []byte{20, 3, 3, 0, 1, 1}, errBadRecordType)
			check("type 24", append([]byte{24, 3, 3, 0, 17}, make([]byte, 17)...), errBadRecordType)
			check("plaintext of 2^14+1", good(contentApplicationData, make([]byte, MaxPlaintext+1)), errRecordOverflow)
			check("empty alert", good(contentAlert, nil), errEmptyRecord)
			check("empty handshake", good(contentHandshake, nil), errEmptyRecord)
			if tls13 {
				check("outer type handshake", ktCraft(t, k, contentHandshake, []byte("x\x17")), errBadRecordType)
				check("outer type alert", ktCraft(t, k, contentAlert, []byte("x\x17")), errBadRecordType)
				check("all padding", ktCraft(t, k, contentApplicationData, make([]byte, 40)), errNoInnerType)
				check("inner type 20", ktCraft(t, k, contentApplicationData, []byte("x\x14")), errBadRecordType)
				// Padding is stripped, and a record may be only padding
				// and type.
				typ, pt, err := open(ktCraft(t, k, contentApplicationData, append([]byte("hi\x00\x15"), make([]byte, 300)...)))
				if err != nil || typ != contentAlert || string(pt) != "hi\x00" {
					t.Errorf("padded record: %d %q %v", typ, pt, err)
				}
				typ, pt, err = open(ktCraft(t, k, contentApplicationData, []byte{23, 0, 0}))
				if err != nil || typ != contentApplicationData || len(pt) != 0 {
					t.Errorf("empty padded data record: %d %q %v", typ, pt, err)
				}
				// Padding up to the limit: 2^14 + 256 bytes of body.
				full := append(make([]byte, MaxPlaintext), 23)
				full = append(full, make([]byte, maxRecordBody-len(full)-16)...)
				if _, pt, err := open(ktCraft(t, k, contentApplicationData, full)); err != nil || len(pt) != MaxPlaintext {
					t.Errorf("record of 2^14+256 bytes: %d %v", len(pt), err)
				}
			}
			if recordAlert(ErrBadRecordMAC) != 20 || recordAlert(errRecordOverflow) != 22 ||
				recordAlert(fmt.Errorf("x: %w", errBadRecordType)) != 10 || recordAlert(io.EOF) != 80 {
				t.Error("recordAlert")
			}
		})
	}
}

// TestRecordLen covers the header checks.
func TestRecordLen(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		n    int
		fail bool
	}{
		{nil, 0, false},
		{[]byte{23, 3, 3, 0}, 0, false},
		{[]byte{23, 3, 3, 0, 0}, 5, false},
		{[]byte{23, 3, 3, 1, 2, 9, 9}, 5 + 258, false},
		{[]byte{20, 3, 3, 0, 1}, 6, false},
		{[]byte{21, 3, 3, 0, 2, 1, 0}, 7, false},
		{[]byte{22, 3, 3, 0x41, 0x00}, 5 + MaxPlaintext + 256, false},
		{[]byte{22, 3, 3, 0x41, 0x01}, 0, true}, // 2^14 + 257
		{[]byte{23, 3, 3, 0xff, 0xff}, 0, true},
		{[]byte{19, 3, 3, 0, 1}, 0, true},
		{[]byte{24, 3, 3, 0, 1}, 0, true},
		{[]byte{0x80, 3, 3, 0, 1}, 0, true},
		{[]byte{23, 3, 1, 0, 1}, 0, true},
		{[]byte{23, 3, 4, 0, 1}, 0, true},
		{[]byte{23, 2, 3, 0, 1}, 0, true},
		{[]byte("GET / HTTP/1.1"), 0, true},
	} {
		n, err := RecordLen(tc.b)
		if n != tc.n || (err != nil) != tc.fail {
			t.Errorf("RecordLen(% x) = %d, %v; want %d, fail %v", tc.b, n, err, tc.n, tc.fail)
		}
	}
}

package ktlsbridge

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"kvpn/internal/race"
	"kvpn/record"
)

// ktKind is a protocol version with one of its AEADs.
type ktKind struct {
	version uint16
	cipher  Cipher
}

func (k ktKind) String() string {
	return strings.ReplaceAll(tls.VersionName(k.version), " ", "") + "/" + k.cipher.String()
}

var ktKinds = []ktKind{
	{tls.VersionTLS12, CipherAES128GCM},
	{tls.VersionTLS12, CipherAES256GCM},
	{tls.VersionTLS12, CipherChaCha20Poly1305},
	{tls.VersionTLS13, CipherAES128GCM},
	{tls.VersionTLS13, CipherAES256GCM},
	{tls.VersionTLS13, CipherChaCha20Poly1305},
}

// ktTestKeys returns fixed keys of kind k, made from seed.
func ktTestKeys(k ktKind, seed byte, seq uint64) Keys {
	keys := Keys{Version: k.version, Cipher: k.cipher, Key: make([]byte, k.cipher.keyLen()), Seq: seq}
	keys.IV = make([]byte, keys.ivLen())
	for i := range keys.Key {
		keys.Key[i] = seed + byte(i)
	}
	for i := range keys.IV {
		keys.IV[i] = seed ^ byte(0xa0+i)
	}
	return keys
}

func ktSealerOpener(t testing.TB, k Keys) (*Sealer, *Opener) {
	t.Helper()
	se, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOpener(k)
	if err != nil {
		t.Fatal(err)
	}
	return se, op
}

// TestUserspaceInterop: after a handshake through the Capture, records
// sealed by our Sealer straight onto the socket are read by the crypto/tls
// peer, and the peer's records open with our Opener, for every supported
// suite, both versions and both roles. Several records each way, a
// zero-length one, a maximal one and a close_notify alert.
func TestUserspaceInterop(t *testing.T) {
	ktRoles(t, ktCases, func(t *testing.T, c ktCase, ourServer bool) {
		s, err := ktHandshake(t, c, ktOpts{ourServer: ourServer})
		if err != nil {
			t.Fatal(err)
		}
		wantSeq := uint64(0)
		if c.version == tls.VersionTLS12 {
			wantSeq = 1
		}
		if s.tx.Seq != wantSeq || s.rx.Seq != wantSeq {
			t.Fatalf("first sequence numbers %d/%d, want %d", s.tx.Seq, s.rx.Seq, wantSeq)
		}
		se, err := NewSealer(s.tx)
		if err != nil {
			t.Fatal(err)
		}
		op, err := NewOpener(s.rx)
		if err != nil {
			t.Fatal(err)
		}

		// Our side to the peer, ending with close_notify.
		var want []byte
		for i, n := range []int{1, 100, 0, 1400, MaxPlaintext, 5000} {
			p := ktPayload(n, byte(i))
			want = append(want, p...)
			ktSealTo(t, s.raw, se, p, contentApplicationData)
		}
		ktSealTo(t, s.raw, se, []byte{1, 0}, contentAlert) // warning, close_notify
		s.peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(s.peer) // io.EOF at close_notify
		if err != nil {
			t.Fatalf("peer read: %v after %d bytes", err, len(got))
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("peer read %d bytes, want %d (equal prefix: %v)", len(got), len(want), bytes.HasPrefix(want, got))
		}

		// The peer to our side, ending with its close_notify.
		var sent []byte
		sizes := []int{1, 1400, MaxPlaintext, 20000}
		for i, n := range sizes {
			sent = append(sent, ktPayload(n, byte(0x40+i))...)
		}
		werr := make(chan error, 1)
		go func() {
			off := 0
			for _, n := range sizes {
				if _, err := s.peer.Write(sent[off : off+n]); err != nil {
					werr <- err
					return
				}
				off += n
			}
			werr <- s.peer.Close()
		}()
		rr := &ktRecordReader{conn: s.raw}
		var recv []byte
		records, largest := 0, 0
		for len(recv) < len(sent) {
			typ, pt, err := op.Open(rr.next(t))
			if err != nil || typ != contentApplicationData {
				t.Fatalf("record %d: type %d, %v", records, typ, err)
			}
			recv = append(recv, pt...)
			records++
			largest = max(largest, len(pt))
		}
		if !bytes.Equal(recv, sent) {
			t.Fatalf("opened %d bytes that differ from the %d the peer sent", len(recv), len(sent))
		}
		if largest != MaxPlaintext {
			t.Errorf("largest record from the peer: %d bytes, want %d", largest, MaxPlaintext)
		}
		typ, pt, err := op.Open(rr.next(t))
		if err != nil || typ != contentAlert || !bytes.Equal(pt, []byte{1, 0}) {
			t.Fatalf("after the data: type %d % x %v, want close_notify", typ, pt, err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("peer write: %v", err)
		}
		t.Logf("%d records from the peer opened; seq tx %d rx %d", records, se.r.seq, op.r.seq)
	})
}

// TestUserspaceBadKeys holds the negative controls: keys that are almost
// right must fail loudly, or a broken key path could pass silently.
// A Sealer with the sequence number off by one makes the crypto/tls peer
// fail with "bad record MAC"; a flipped bit anywhere in a record, a wrong
// key, a wrong sequence number or the other direction's keys make our
// Opener fail with ErrBadRecordMAC.
func TestUserspaceBadKeys(t *testing.T) {
	ktRoles(t, ktCases, func(t *testing.T, c ktCase, ourServer bool) {
		deltas := []int64{+1}
		if c.version == tls.VersionTLS12 {
			deltas = append(deltas, -1) // 0, the Finished record's number
		}
		for _, d := range deltas {
			s, err := ktHandshake(t, c, ktOpts{ourServer: ourServer})
			if err != nil {
				t.Fatal(err)
			}
			k := s.tx
			k.Seq = uint64(int64(k.Seq) + d)
			se, err := NewSealer(k)
			if err != nil {
				t.Fatal(err)
			}
			ktSealTo(t, s.raw, se, []byte("hello"), contentApplicationData)
			s.peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := s.peer.Read(make([]byte, 100))
			if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
				t.Fatalf("seq %+d: peer read %d bytes, %v; want bad record MAC", d, n, err)
			}
		}

		s, err := ktHandshake(t, c, ktOpts{ourServer: ourServer})
		if err != nil {
			t.Fatal(err)
		}
		go s.peer.Write([]byte("a record from the peer"))
		rec := (&ktRecordReader{conn: s.raw}).next(t)
		mustFail := func(what string, k Keys, rec []byte, want error) {
			t.Helper()
			op, err := NewOpener(k)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := op.Open(bytes.Clone(rec)); !errors.Is(err, want) {
				t.Errorf("%s: Open: %v, want %v", what, err, want)
			}
		}
		wrongKey := s.rx
		wrongKey.Key = bytes.Clone(wrongKey.Key)
		wrongKey.Key[0] ^= 1
		mustFail("wrong key", wrongKey, rec, ErrBadRecordMAC)
		wrongIV := s.rx
		wrongIV.IV = bytes.Clone(wrongIV.IV)
		wrongIV.IV[0] ^= 1
		mustFail("wrong IV", wrongIV, rec, ErrBadRecordMAC)
		for _, d := range []int64{-1, +1} {
			k := s.rx
			k.Seq = uint64(int64(k.Seq) + d)
			if k.Seq == math.MaxUint64 {
				continue
			}
			mustFail(fmt.Sprintf("seq %+d", d), k, rec, ErrBadRecordMAC)
		}
		mustFail("the other direction's keys", s.tx, rec, ErrBadRecordMAC)
		// Every bit of the body, and (TLS 1.2, where it is additional
		// data) the content type.
		first := RecordHeaderLen
		if c.version == tls.VersionTLS12 {
			first = 0
		}
		for i := first; i < len(rec); i++ {
			if i >= 1 && i < RecordHeaderLen {
				continue // version and length: malformed, tested elsewhere
			}
			for bit := range 8 {
				bad := bytes.Clone(rec)
				bad[i] ^= 1 << bit
				want := ErrBadRecordMAC
				if i == 0 && (bad[0] < contentAlert || bad[0] > contentApplicationData) {
					want = errBadRecordType
				}
				mustFail(fmt.Sprintf("bit %d of byte %d", bit, i), s.rx, bad, want)
			}
		}
		// The record itself opens, after all those failures.
		op, err := NewOpener(s.rx)
		if err != nil {
			t.Fatal(err)
		}
		if typ, pt, err := op.Open(rec); err != nil || typ != contentApplicationData || string(pt) != "a record from the peer" {
			t.Fatalf("Open: %d %q %v", typ, pt, err)
		}
	})
}

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

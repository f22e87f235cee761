package ktlsbridge

import (
	"bytes"
	"encoding/binary"
	"testing"

	"kvpn/record"
)

// FuzzOpen: arbitrary bytes given to Open as a record never panic, and
// whatever Open accepts is consistent: RecordLen agrees on the length, the
// content type is alert, handshake or data, and the plaintext lies inside
// the record and within the limit.
func FuzzOpen(f *testing.F) {
	for i, kind := range ktKinds {
		se, _ := ktSealerOpener(f, ktTestKeys(kind, 6, 0))
		for j, n := range []int{0, 1, 40} {
			h := se.Headroom()
			buf := make([]byte, h+n+se.Tailroom())
			copy(buf[h:], ktPayload(n, byte(j)))
			typ := uint8(contentApplicationData)
			if j == 1 {
				typ = contentAlert
			}
			rec, err := se.Seal(buf, h, n, record.ContentType(typ))
			if err != nil {
				f.Fatal(err)
			}
			if j == 0 {
				f.Add(uint8(i), rec) // the first record, at sequence number 0
			}
			f.Add(uint8(i), rec[:len(rec)-1])
		}
	}
	f.Add(uint8(0), []byte{23, 3, 3, 0, 0})
	f.Add(uint8(3), []byte{23, 3, 3, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		kind := ktKinds[int(which)%len(ktKinds)]
		_, op := ktSealerOpener(t, ktTestKeys(kind, 6, 0))
		rec := bytes.Clone(data)
		typ, pt, err := op.Open(rec)
		if err != nil {
			if op.r.seq != 0 {
				t.Fatal("a failed Open advanced the sequence number")
			}
			return
		}
		if n, err := RecordLen(data); err != nil || n != len(data) {
			t.Fatalf("Open accepted a record RecordLen calls %d, %v (len %d)", n, err, len(data))
		}
		if typ < contentAlert || typ > contentApplicationData || len(pt) > MaxPlaintext {
			t.Fatalf("Open: type %d, %d bytes", typ, len(pt))
		}
		if len(pt) > 0 {
			start := int(ktOffset(rec, pt))
			if start < RecordHeaderLen || start+len(pt) > len(rec) {
				t.Fatalf("plaintext at %d+%d outside the record of %d bytes", start, len(pt), len(rec))
			}
		}
		if op.r.seq != 1 {
			t.Fatalf("sequence number %d after one record", op.r.seq)
		}
	})
}

// ktOffset is the offset of b's first byte in a, which b must alias.
func ktOffset(a, b []byte) int {
	for i := range a {
		if &a[i] == &b[0] {
			return i
		}
	}
	return -1
}

// FuzzRecordLen: RecordLen never panics, returns 0 and no error for fewer
// than five bytes, and otherwise either an error or exactly header plus the
// length field, within the limit.
func FuzzRecordLen(f *testing.F) {
	f.Add([]byte{23, 3, 3, 0, 0})
	f.Add([]byte{22, 3, 3, 0x41, 0x00, 1})
	f.Add([]byte{21, 3, 1, 0, 2})
	f.Add([]byte{23, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := RecordLen(b)
		if len(b) < RecordHeaderLen {
			if n != 0 || err != nil {
				t.Fatalf("%d bytes: %d, %v", len(b), n, err)
			}
			return
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("error with length %d", n)
			}
			return
		}
		if n != RecordHeaderLen+int(binary.BigEndian.Uint16(b[3:5])) || n > RecordHeaderLen+maxRecordBody {
			t.Fatalf("RecordLen(% x) = %d", b[:5], n)
		}
		if b[0] < contentChangeCipherSpec || b[0] > contentApplicationData || b[1] != 3 || b[2] != 3 {
			t.Fatalf("RecordLen accepted header % x", b[:5])
		}
	})
}

package recordlayer

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen: arbitrary datagrams through NextRecord(CID), ParseHeader,
// ParseCIDHeader, PeekCID and Open never panic, Open never accepts what was
// not sealed with the key, and the header of anything Open returns agrees
// with the parsers. which picks the suite and whether the channel uses
// connection IDs (testCIDB from the sender, as pairCID).
func FuzzOpen(f *testing.F) {
	for si, s := range testSuites {
		for _, cid := range []bool{false, true} {
			var se *Sealer
			which := uint8(si)
			if cid {
				se, _ = pairCID(f, s, 1)
				which += uint8(len(testSuites))
			} else {
				se, _ = pair(f, s, 1)
			}
			var dg []byte
			for i, n := range []int{0, 1, 40} {
				dg = append(dg, sealInto(f, se, payload(n, byte(i)), ContentType(21+i))...)
			}
			f.Add(which, dg)
			f.Add(which, dg[:len(dg)-1])
		}
	}
	f.Add(uint8(1), []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3})
	f.Add(uint8(0), []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add(uint8(3), []byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0xbe, 0xef, 9, 8, 7, 0, 0})
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		s := testSuites[int(which)%len(testSuites)]
		withCID := int(which)/len(testSuites)%2 == 1
		var op *Opener
		cidLen := 0
		if withCID {
			_, op = pairCID(t, s, 0)
			cidLen = len(testCIDB)
		} else {
			_, op = pair(t, s, 0)
		}
		ParseHeader(data)
		ParseCIDHeader(data, cidLen)
		peeked, peekOK := PeekCID(data, len(testCIDB))
		if peekOK && len(peeked) != len(testCIDB) {
			t.Fatalf("PeekCID returned %d bytes", len(peeked))
		}
		sawCID := false
		rest := bytes.Clone(data)
		for len(rest) > 0 {
			rec, r, err := NextRecordCID(rest, cidLen)
			if err != nil {
				break
			}
			rest = r
			if len(rec) > len(data) || len(rec) < HeaderLen {
				t.Fatalf("NextRecordCID returned %d bytes of %d", len(rec), len(data))
			}
			ct, epoch, seq, cid, length, err := ParseCIDHeader(rec, cidLen)
			if err != nil || length != len(rec)-HeaderLen-len(cid) {
				t.Fatalf("ParseCIDHeader of a split record: %v", err)
			}
			if ct == ConnectionID {
				if len(cid) != cidLen {
					t.Fatalf("cid of %d bytes", len(cid))
				}
				if withCID && !sawCID && (!peekOK || !bytes.Equal(peeked, cid)) {
					t.Fatalf("PeekCID %x %v, first tls12_cid record has %x", peeked, peekOK, cid)
				}
				sawCID = true
			} else if _, _, _, l, err := ParseHeader(rec); err != nil || l != length {
				t.Fatalf("ParseHeader and ParseCIDHeader disagree: %d %d %v", l, length, err)
			}
			gotCT, plain, err := op.Open(rec)
			if err != nil {
				continue
			}
			if epoch != 1 {
				t.Fatalf("Open accepted epoch %d", epoch)
			}
			if withCID {
				// Only tls12_cid records with our CID; the real type is
				// the inner one, the content shorter than the body.
				if ct != ConnectionID || !bytes.Equal(cid, testCIDB) || gotCT == 0 ||
					len(plain) > length-s.explicit()-tagLen-1 {
					t.Fatalf("Open: %v %d bytes from %v cid %x seq %d length %d", gotCT, len(plain), ct, cid, seq, length)
				}
			} else if gotCT != ct || len(plain) != length-s.Overhead()+HeaderLen {
				t.Fatalf("Open: %v %d bytes from %v epoch %d seq %d length %d", gotCT, len(plain), ct, epoch, seq, length)
			}
		}
		if withCID && peekOK && !sawCID {
			t.Fatal("PeekCID found a CID that NextRecordCID did not")
		}
		// And the whole input as one record, without splitting.
		op.Open(bytes.Clone(data))
	})
}

// FuzzCIDHeader: the parsers agree with each other for any CID length,
// and never read outside their input.
func FuzzCIDHeader(f *testing.F) {
	se, _ := pairCID(f, TLS_PSK_WITH_AES_128_GCM_SHA256, 1)
	rec := sealInto(f, se, []byte("seed"), ApplicationData)
	hs := make([]byte, HeaderLen+2)
	putHeader(hs, Handshake, 0, 1, 2)
	f.Add(len(testCIDB), append(bytes.Clone(hs), rec...))
	f.Add(0, rec)
	f.Add(255, rec)
	f.Add(-1, rec)
	f.Fuzz(func(t *testing.T, cidLen int, data []byte) {
		_, _, _, cid, length, perr := ParseCIDHeader(data, cidLen)
		r, rest, nerr := NextRecordCID(data, cidLen)
		end := HeaderLen + len(cid) + length
		switch {
		case perr != nil && nerr == nil:
			t.Fatalf("ParseCIDHeader %v, NextRecordCID accepted", perr)
		case perr == nil && nerr != nil && (end <= len(data) || !errors.Is(nerr, ErrTruncated)):
			// NextRecordCID may only add the check that the record fits.
			t.Fatalf("ParseCIDHeader accepted, NextRecordCID %v (end %d of %d)", nerr, end, len(data))
		}
		if nerr == nil {
			if len(r)+len(rest) != len(data) || len(r) != HeaderLen+len(cid)+length {
				t.Fatalf("split %d+%d of %d, header+cid+length %d", len(r), len(rest), len(data), HeaderLen+len(cid)+length)
			}
		}
		got, ok := PeekCID(data, cidLen)
		if ok && (len(got) != cidLen || cidLen < 1) {
			t.Fatalf("PeekCID %x for cidLen %d", got, cidLen)
		}
		if ok && nerr != nil {
			t.Fatal("PeekCID accepted what NextRecordCID refused")
		}
	})
}

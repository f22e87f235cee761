package record

import (
	"bytes"
	"testing"
)

// FuzzOpen: arbitrary datagrams through NextRecord, ParseHeader and Open
// never panic, Open never accepts what was not sealed with the key, and the
// header of anything Open returns agrees with ParseHeader.
func FuzzOpen(f *testing.F) {
	for si, s := range testSuites {
		se, _ := pair(f, s, 1)
		var dg []byte
		for i, n := range []int{0, 1, 40} {
			dg = append(dg, sealInto(f, se, payload(n, byte(i)), ApplicationData)...)
		}
		f.Add(uint8(si), dg)
		f.Add(uint8(si), dg[:len(dg)-1])
	}
	f.Add(uint8(1), []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3})
	f.Add(uint8(0), []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		s := testSuites[int(which)%len(testSuites)]
		_, op := pair(t, s, 0)
		ParseHeader(data)
		rest := bytes.Clone(data)
		for len(rest) > 0 {
			rec, r, err := NextRecord(rest)
			if err != nil {
				break
			}
			rest = r
			if len(rec) > len(data) || len(rec) < HeaderLen {
				t.Fatalf("NextRecord returned %d bytes of %d", len(rec), len(data))
			}
			ct, epoch, seq, length, err := ParseHeader(rec)
			if err != nil || length != len(rec)-HeaderLen {
				t.Fatalf("ParseHeader of a split record: %v", err)
			}
			gotCT, plain, err := op.Open(rec)
			if err != nil {
				continue
			}
			if gotCT != ct || epoch != 1 || len(plain) != length-s.Overhead()+HeaderLen {
				t.Fatalf("Open: %v %d bytes from %v epoch %d seq %d length %d", gotCT, len(plain), ct, epoch, seq, length)
			}
		}
		// And the whole input as one record, without splitting.
		op.Open(bytes.Clone(data))
	})
}

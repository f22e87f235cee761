package recordlayer

import (
	"bytes"
	"errors"
	"strconv"
	"testing"
)

// TestCIDOpenRejects covers the refusals of tls12_cid records and of the
// wrong kind of record for an Opener.
func TestCIDOpenRejects(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pairCID(t, s, 100)
			cl := len(testCIDB)
			fresh := func() []byte { return sealInto(t, se, payload(200, 3), ApplicationData) }
			expect := func(name string, rec []byte, want error) {
				t.Helper()
				in := bytes.Clone(rec)
				if _, _, err := op.Open(rec); !errors.Is(err, want) {
					t.Errorf("%s: %v, want %v", name, err, want)
				}
				if want != ErrAuth && !bytes.Equal(in, rec) {
					t.Errorf("%s: Open changed a record it refused before decrypting", name)
				}
			}

			// Bit flips: the sequence number, explicit nonce, ciphertext
			// and tag are authenticated; CID, epoch, version and length
			// are checked first.
			for _, pos := range []int{5, 10, 11, 11 + cl - 1, 11 + cl, 12 + cl, HeaderLen + cl, HeaderLen + cl + 7, HeaderLen + cl + 8, -17, -16, -1} {
				rec := fresh()
				if pos < 0 {
					pos += len(rec)
				}
				rec[pos] ^= 0x40
				want := ErrAuth
				switch {
				case pos >= 11 && pos < 11+cl:
					want = ErrCID
				case pos == 11+cl || pos == 12+cl:
					want = ErrTruncated // the length field
				}
				expect("flip byte "+strconv.Itoa(pos), rec, want)
			}
			for _, pos := range []int{3, 4} {
				rec := fresh()
				rec[pos] ^= 0x40
				expect("flip epoch byte "+strconv.Itoa(pos), rec, ErrEpoch)
			}
			rec := fresh()
			rec[2] = 0xff
			expect("version", rec, ErrVersion)
			rec = fresh()
			rec[0] = byte(ApplicationData) // no longer a tls12_cid record: misparsed length
			expect("outer type 23", rec, ErrTruncated)

			// A valid record with another CID (the peer's other CID, same
			// keys), and one with ours but for a plain Opener.
			a, b := testKeysCID(s)
			a.LocalCID = []byte{1, 2, 3, 4, 5}
			other, _ := NewSealer(a, 0)
			expect("other CID", sealInto(t, other, []byte("x"), ApplicationData), ErrCID)
			a.LocalCID = append(bytes.Clone(testCIDB), 0) // one byte longer
			other, _ = NewSealer(a, 0)
			expect("longer CID", sealInto(t, other, []byte("x"), ApplicationData), ErrTruncated)
			b.RemoteCID = nil
			plainOpener, _ := NewOpener(b, 1024)
			if _, _, err := plainOpener.Open(fresh()); !errors.Is(err, ErrCID) {
				t.Errorf("tls12_cid record to an Opener without CID: %v", err)
			}
			// A plain record of the data epoch to a CID Opener: refused
			// (RFC 9146 section 3, and pion does so too).
			a.LocalCID = nil
			plainSealer, _ := NewSealer(a, 0)
			expect("plain record", sealInto(t, plainSealer, []byte("x"), ApplicationData), ErrCID)
			// A plain epoch-0 record (a handshake retransmission) still
			// gets ErrEpoch, so it can go to pion.
			hs := make([]byte, HeaderLen+40)
			putHeader(hs, Handshake, 0, 3, 40)
			expect("epoch 0 handshake", hs, ErrEpoch)

			// Wrong epoch with a valid tag.
			a, _ = testKeysCID(s)
			a.Epoch = 2
			se2, _ := NewSealer(a, 0)
			expect("epoch 2", sealInto(t, se2, []byte("x"), ApplicationData), ErrEpoch)

			// Truncations.
			rec = fresh()
			for _, n := range []int{0, 1, HeaderLen - 1, HeaderLen, HeaderLen + cl - 1, HeaderLen + cl, HeaderLen + cl + 5, len(rec) - 1} {
				expect("truncated to "+strconv.Itoa(n), rec[:n], ErrTruncated)
			}
			// Too short for nonce, type and tag, with a consistent length.
			short := make([]byte, se.Overhead()-1)
			putCIDHeader(short, 1, 500, testCIDB, len(short)-HeaderLen-cl)
			expect("body shorter than nonce+type+tag", short, ErrTruncated)
			big := make([]byte, HeaderLen+cl+maxCiphertext+1)
			putCIDHeader(big, 1, 501, testCIDB, maxCiphertext+1)
			expect("over 2^14+2048", big, ErrTooLarge)

			// Replays.
			rec = fresh()
			if _, _, err := op.Open(bytes.Clone(rec)); err != nil {
				t.Fatalf("good record after the forgeries: %v", err)
			}
			expect("replay", rec, ErrReplay)
		})
	}
}

func TestCIDParse(t *testing.T) {
	se, op := pairCID(t, TLS_PSK_WITH_AES_128_GCM_SHA256, 7)
	cl := len(testCIDB)
	// A datagram as pion sends a flight: plain handshake records, then a
	// tls12_cid one, then more.
	hs := make([]byte, HeaderLen+3)
	putHeader(hs, Handshake, 0, 9, 3)
	dg := append(bytes.Clone(hs), sealInto(t, se, payload(30, 1), Handshake)...)
	dg = append(dg, sealInto(t, se, payload(10, 2), ApplicationData)...)
	dg = append(dg, hs...)

	if _, _, err := NextRecord(dg[HeaderLen+3:]); !errors.Is(err, ErrCID) {
		t.Errorf("NextRecord of a tls12_cid record: %v", err)
	}
	if _, _, _, _, err := ParseHeader(dg[HeaderLen+3:]); !errors.Is(err, ErrCID) {
		t.Errorf("ParseHeader of a tls12_cid record: %v", err)
	}
	cid, ok := PeekCID(dg, cl)
	if !ok || !bytes.Equal(cid, testCIDB) || &cid[0] != &dg[HeaderLen+3+11] || cap(cid) != cl {
		t.Fatalf("PeekCID: %x %v", cid, ok)
	}
	want := []struct {
		ct  ContentType
		seq uint64
		pt  []byte
	}{{Handshake, 9, nil}, {Handshake, 7, payload(30, 1)}, {ApplicationData, 8, payload(10, 2)}, {Handshake, 9, nil}}
	rest := dg
	for i, w := range want {
		var rec []byte
		var err error
		rec, rest, err = NextRecordCID(rest, cl)
		if err != nil || cap(rec) != len(rec) {
			t.Fatalf("record %d: %v", i, err)
		}
		ct, epoch, seq, cid, length, err := ParseCIDHeader(rec, cl)
		if err != nil || seq != w.seq || length != len(rec)-HeaderLen-len(cid) {
			t.Fatalf("record %d: %v %d %d %x %d %v", i, ct, epoch, seq, cid, length, err)
		}
		if w.pt == nil {
			if ct != Handshake || epoch != 0 || cid != nil {
				t.Fatalf("record %d: %v %d %x", i, ct, epoch, cid)
			}
			if _, _, err := op.Open(rec); !errors.Is(err, ErrEpoch) {
				t.Fatalf("record %d: %v", i, err)
			}
			continue
		}
		if ct != ConnectionID || epoch != 1 || !bytes.Equal(cid, testCIDB) {
			t.Fatalf("record %d: %v %d %x", i, ct, epoch, cid)
		}
		gotCT, got, err := op.Open(rec)
		if err != nil || gotCT != w.ct || !bytes.Equal(got, w.pt) {
			t.Fatalf("record %d: %v %v", i, gotCT, err)
		}
	}
	if len(rest) != 0 {
		t.Fatal("bytes left")
	}

	// Malformed input and bad CID lengths.
	for _, l := range []int{-1, 256} {
		if _, _, err := NextRecordCID(dg, l); !errors.Is(err, ErrCID) {
			t.Errorf("NextRecordCID cidLen %d: %v", l, err)
		}
		if _, _, _, _, _, err := ParseCIDHeader(dg, l); !errors.Is(err, ErrCID) {
			t.Errorf("ParseCIDHeader cidLen %d: %v", l, err)
		}
	}
	cidRec := dg[HeaderLen+3:]
	for _, n := range []int{0, HeaderLen - 1, HeaderLen, HeaderLen + cl - 1} {
		if _, _, err := NextRecordCID(cidRec[:n], cl); !errors.Is(err, ErrTruncated) {
			t.Errorf("NextRecordCID of %d bytes: %v", n, err)
		}
		if _, _, _, _, _, err := ParseCIDHeader(cidRec[:n], cl); !errors.Is(err, ErrTruncated) {
			t.Errorf("ParseCIDHeader of %d bytes: %v", n, err)
		}
		if _, ok := PeekCID(cidRec[:n], cl); ok {
			t.Errorf("PeekCID of %d bytes", n)
		}
	}
	if _, _, err := NextRecordCID(cidRec[:40], cl); !errors.Is(err, ErrTruncated) {
		t.Error("NextRecordCID: length past the end")
	}
	for _, tc := range []struct {
		name string
		dg   []byte
		l    int
	}{
		{"no CID record", hs, cl},
		{"CID length 0", dg, 0},
		{"CID length 256", dg, 256},
		{"broken record before", append(hs[:HeaderLen+2:HeaderLen+2], cidRec...), cl},
	} {
		if cid, ok := PeekCID(tc.dg, tc.l); ok {
			t.Errorf("PeekCID %s: %x", tc.name, cid)
		}
	}
	// A cidLen of 0 parses a tls12_cid header like a plain one.
	if ct, _, _, cid, length, err := ParseCIDHeader([]byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4}, 0); err != nil ||
		ct != ConnectionID || len(cid) != 0 || length != 4 {
		t.Errorf("cidLen 0: %v %x %d %v", ct, cid, length, err)
	}
	if ConnectionID.String() != "tls12_cid" {
		t.Error("String")
	}
}

package record

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"kvpn/internal/race"

	"github.com/pion/dtls/v3"
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

func cidPSKConfig(suite dtls.CipherSuiteID, gen func() []byte) *dtls.Config {
	c := pskConfig(suite)
	c.ConnectionIDGenerator = gen
	return c
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

// TestPionInteropCID: pion v3 negotiates connection IDs (RFC 9146) on both
// sides, and our records interoperate with its records in both directions
// and both roles.
func TestPionInteropCID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   dtls.CipherSuiteID
	}{
		{"PSK-AES128-GCM", dtls.TLS_PSK_WITH_AES_128_GCM_SHA256},
		{"PSK-CHACHA20", dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Different lengths: the client asks for 8 bytes, the server
			// for 5, so that a swap of the directions cannot pass.
			p := handshake(t, cidPSKConfig(tc.id, dtls.RandomCIDGenerator(8)),
				cidPSKConfig(tc.id, dtls.RandomCIDGenerator(5)))
			ck, sk := p.ck, p.sk
			if len(ck.RemoteCID) != 8 || len(ck.LocalCID) != 5 ||
				!bytes.Equal(ck.LocalCID, sk.RemoteCID) || !bytes.Equal(ck.RemoteCID, sk.LocalCID) {
				t.Fatalf("CIDs: client local %x remote %x, server local %x remote %x",
					ck.LocalCID, ck.RemoteCID, sk.LocalCID, sk.RemoteCID)
			}
			testInteropCID(t, p, Suite(tc.id))
		})
	}
}

func testInteropCID(t *testing.T, p *pionPair, suite Suite) {
	ck, sk := p.ck, p.sk
	t.Logf("client LocalSeq=%d RemoteSeq=%d, server LocalSeq=%d RemoteSeq=%d",
		ck.LocalSeq, ck.RemoteSeq, sk.LocalSeq, sk.RemoteSeq)
	if ck.LocalSeq != 1 || sk.LocalSeq != 1 || ck.RemoteSeq != 1 || sk.RemoteSeq != 1 {
		t.Fatalf("sequence numbers after the handshake: client %d/%d server %d/%d, want all 1",
			ck.LocalSeq, ck.RemoteSeq, sk.LocalSeq, sk.RemoteSeq)
	}
	// pion's Finished, in epoch 1, was already a tls12_cid record carrying
	// the CID its receiver asked for.
	for _, tc := range []struct {
		end *memConn
		cid []byte
	}{{p.serverEnd, sk.RemoteCID}, {p.clientEnd, ck.RemoteCID}} {
		tc.end.logMu.Lock()
		var found bool
		for _, dg := range tc.end.log {
			if cid, ok := PeekCID(dg, len(tc.cid)); ok {
				found = bytes.Equal(cid, tc.cid)
			}
		}
		tc.end.logMu.Unlock()
		if !found {
			t.Fatalf("no tls12_cid Finished carrying %x", tc.cid)
		}
	}

	// (a) Our sealer with the client's keys to pion's server.
	cs, err := NewSealer(ck, ck.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{1400, 0, 1, 100} {
		want := payload(n, byte(i))
		rec := sealInto(t, cs, want, ApplicationData)
		if len(rec) != n+suite.Overhead()+len(ck.LocalCID)+1 || rec[0] != byte(ConnectionID) {
			t.Fatalf("record of %d bytes, type %d, for %d of payload", len(rec), rec[0], n)
		}
		p.clientEnd.WriteTo(rec, p.serverEnd.laddr)
		if got := pionRead(t, p.server); !bytes.Equal(got, want) {
			t.Fatalf("pion server read %d bytes, want %d", len(got), len(want))
		}
	}
	// Several in one datagram: pion splits by its own CID length.
	var dg []byte
	for i := range 3 {
		dg = append(dg, sealInto(t, cs, payload(50, byte(10+i)), ApplicationData)...)
	}
	p.clientEnd.WriteTo(dg, p.serverEnd.laddr)
	for i := range 3 {
		if got := pionRead(t, p.server); !bytes.Equal(got, payload(50, byte(10+i))) {
			t.Fatalf("record %d of a datagram: pion read %x", i, got)
		}
	}
	// pion drops a record with a wrong CID (and our next one still
	// arrives): the CID is part of what it checks, not only routing.
	bad := sealInto(t, cs, []byte("wrong cid"), ApplicationData)
	bad[11] ^= 1
	p.clientEnd.WriteTo(bad, p.serverEnd.laddr)
	want := payload(77, 5)
	p.clientEnd.WriteTo(sealInto(t, cs, want, ApplicationData), p.serverEnd.laddr)
	if got := pionRead(t, p.server); !bytes.Equal(got, want) {
		t.Fatalf("after a wrong CID pion read %q", got)
	}

	// (b) pion's server writes; we open with the client's keys.
	tap := make(chan []byte, 16)
	p.clientEnd.tap.Store(&tap)
	co, err := NewOpener(ck, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{1400, 1, 0, 700} {
		want := payload(n, byte(100+i))
		if _, err := p.server.Write(want); err != nil {
			t.Fatal(err)
		}
		raw := readTap(t, tap)
		cid, ok := PeekCID(raw, len(ck.RemoteCID))
		if !ok || !bytes.Equal(cid, ck.RemoteCID) {
			t.Fatalf("PeekCID of pion's datagram: %x %v", cid, ok)
		}
		rec, rest, err := NextRecordCID(raw, len(ck.RemoteCID))
		if err != nil || len(rest) != 0 {
			t.Fatalf("NextRecordCID: %v, %d bytes left", err, len(rest))
		}
		ct, epoch, seq, _, length, _ := ParseCIDHeader(rec, len(ck.RemoteCID))
		if ct != ConnectionID || epoch != 1 || seq != sk.LocalSeq+uint64(i) ||
			length != n+suite.Overhead()-HeaderLen+1 { // pion pads nothing
			t.Fatalf("pion sent %v epoch %d seq %d length %d", ct, epoch, seq, length)
		}
		gotCT, got, err := co.Open(rec)
		if err != nil || gotCT != ApplicationData || !bytes.Equal(got, want) {
			t.Fatalf("Open pion's record: %v %d bytes %v", gotCT, len(got), err)
		}
		if _, _, err := co.Open(bytes.Clone(raw)); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of pion's record: %v", err)
		}
		// The same record with the CID changed: ErrCID before any
		// decryption.
		mod := bytes.Clone(raw)
		mod[12] ^= 0x80
		if _, _, err := co.Open(mod); !errors.Is(err, ErrCID) {
			t.Fatalf("pion's record with a changed CID: %v", err)
		}
	}
	p.clientEnd.tap.Store(nil)

	// The other roles.
	ss, err := NewSealer(sk, sk.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	want = payload(1200, 42)
	p.serverEnd.WriteTo(sealInto(t, ss, want, ApplicationData), p.clientEnd.laddr)
	if got := pionRead(t, p.client); !bytes.Equal(got, want) {
		t.Fatal("pion client read the wrong payload")
	}
	p.serverEnd.tap.Store(&tap)
	so, err := NewOpener(sk, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		want := payload(300*i, byte(i))
		if _, err := p.client.Write(want); err != nil {
			t.Fatal(err)
		}
		raw := readTap(t, tap)
		// The server's demultiplexer: find the peer by CID.
		if cid, ok := PeekCID(raw, len(sk.RemoteCID)); !ok || !bytes.Equal(cid, so.CID()) {
			t.Fatalf("PeekCID: %x %v", cid, ok)
		}
		rec, _, err := NextRecordCID(raw, len(sk.RemoteCID))
		if err != nil {
			t.Fatal(err)
		}
		// Bit flips in the ciphertext fail authentication and leave the
		// window alone.
		flipped := bytes.Clone(rec)
		flipped[len(flipped)-1] ^= 1
		if _, _, err := so.Open(flipped); !errors.Is(err, ErrAuth) {
			t.Fatalf("flipped pion record: %v", err)
		}
		if ct, got, err := so.Open(rec); err != nil || ct != ApplicationData || !bytes.Equal(got, want) {
			t.Fatalf("open pion client's record: %v %v", ct, err)
		}
	}
	p.serverEnd.tap.Store(nil)

	// Our two ends agree as well, and an alert keeps its type.
	rec := sealInto(t, cs, want, Alert)
	if ct, got, err := so.Open(rec); err != nil || ct != Alert || !bytes.Equal(got, want) {
		t.Fatalf("our sealer to our opener: %v %v", ct, err)
	}
}

// TestPionInteropCIDOneWay: only the server asks for a connection ID (the
// client uses OnlySendCIDGenerator), so records to the server carry one
// and records to the client do not.
func TestPionInteropCIDOneWay(t *testing.T) {
	id := dtls.TLS_PSK_WITH_AES_128_GCM_SHA256
	p := handshake(t, cidPSKConfig(id, dtls.OnlySendCIDGenerator()), cidPSKConfig(id, dtls.RandomCIDGenerator(8)))
	ck, sk := p.ck, p.sk
	if len(ck.LocalCID) != 8 || ck.RemoteCID != nil || sk.LocalCID != nil || !bytes.Equal(sk.RemoteCID, ck.LocalCID) {
		t.Fatalf("CIDs: client local %x remote %x, server local %x remote %x", ck.LocalCID, ck.RemoteCID, sk.LocalCID, sk.RemoteCID)
	}
	cs, _ := NewSealer(ck, ck.SealerStart())
	ss, _ := NewSealer(sk, sk.SealerStart())
	co, _ := NewOpener(ck, 1024)
	so, _ := NewOpener(sk, 1024)
	want := payload(500, 9)

	recC := sealInto(t, cs, want, ApplicationData)
	recS := sealInto(t, ss, want, ApplicationData)
	if recC[0] != byte(ConnectionID) || recS[0] != byte(ApplicationData) {
		t.Fatalf("record types %d %d", recC[0], recS[0])
	}
	p.clientEnd.WriteTo(bytes.Clone(recC), p.serverEnd.laddr)
	if got := pionRead(t, p.server); !bytes.Equal(got, want) {
		t.Fatal("pion server")
	}
	p.serverEnd.WriteTo(bytes.Clone(recS), p.clientEnd.laddr)
	if got := pionRead(t, p.client); !bytes.Equal(got, want) {
		t.Fatal("pion client")
	}
	if _, got, err := so.Open(recC); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("server opener: %v", err)
	}
	if _, got, err := co.Open(recS); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("client opener: %v", err)
	}

	// pion's own records are numbered from LocalSeq, far below ours: new
	// openers for them.
	co, _ = NewOpener(ck, 1024)
	so, _ = NewOpener(sk, 1024)
	tap := make(chan []byte, 4)
	p.clientEnd.tap.Store(&tap)
	p.server.Write(want)
	rec, _, err := NextRecord(readTap(t, tap))
	if err != nil || rec[0] != byte(ApplicationData) {
		t.Fatalf("pion server's record: %v", err)
	}
	if _, got, err := co.Open(rec); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("client opener, pion's record: %v", err)
	}
	p.clientEnd.tap.Store(nil)
	p.serverEnd.tap.Store(&tap)
	p.client.Write(want)
	raw := readTap(t, tap)
	if cid, ok := PeekCID(raw, 8); !ok || !bytes.Equal(cid, sk.RemoteCID) {
		t.Fatal("PeekCID")
	}
	rec, _, err = NextRecordCID(raw, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := so.Open(rec); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("server opener, pion's record: %v", err)
	}
}

// TestPionRetransmitAfterTakeoverCID is TestPionRetransmitAfterTakeover
// with connection IDs, where pion behaves differently: its tls12_cid
// Finished keeps the sequence number of its first transmission (epoch 1,
// seq 0), because pion's processHandshakePacket writes the cached record
// header's number, not the counter's, into a CID header, though the
// counter still advances. The retransmission is the same record byte for
// byte (same nonce, same plaintext), so no nonce is reused for another
// plaintext, our Opener refuses it as a replay (it is below RemoteSeq)
// without touching it, and our Sealer's numbers are far away.
func TestPionRetransmitAfterTakeoverCID(t *testing.T) {
	ce, se := memPipe()
	const cl = 8
	epoch1 := func(dg []byte) [][]byte {
		var recs [][]byte
		for len(dg) > 0 {
			rec, rest, err := NextRecordCID(dg, cl)
			if err != nil {
				t.Errorf("datagram from pion: %v", err)
				return recs
			}
			if _, epoch, _, _, _, _ := ParseCIDHeader(rec, cl); epoch == 1 {
				recs = append(recs, rec)
			}
			dg = rest
		}
		return recs
	}
	var dropped atomic.Bool
	dropFinished := func(dg []byte) bool {
		return len(epoch1(dg)) > 0 && !dropped.Swap(true)
	}
	ce.drop.Store(&dropFinished)
	server, client, sk, clientDone := lossyHandshake(t, ce, se, cidPSKConfig(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, dtls.RandomCIDGenerator(cl)))
	if err := <-clientDone; err != nil {
		t.Fatalf("client handshake after the retransmission: %v", err)
	}
	ck, err := KeysFromConn(client)
	if err != nil {
		t.Fatal(err)
	}
	if !dropped.Load() {
		t.Fatal("nothing dropped")
	}

	var finished [][]byte
	ce.logMu.Lock()
	for _, dg := range ce.log {
		finished = append(finished, epoch1(dg)...)
	}
	ce.logMu.Unlock()
	if len(finished) < 2 {
		t.Fatalf("%d epoch-1 records from the server, want the lost Finished and its retransmission", len(finished))
	}
	for i, rec := range finished {
		ct, _, seq, cid, _, _ := ParseCIDHeader(rec, cl)
		t.Logf("server epoch-1 record %d: %v seq %d (export LocalSeq %d)", i, ct, seq, sk.LocalSeq)
		if ct != ConnectionID || seq != 0 || !bytes.Equal(cid, ck.RemoteCID) || !bytes.Equal(rec, finished[0]) {
			t.Fatalf("retransmitted Finished %d differs: %v seq %d", i, ct, seq)
		}
	}
	sk2, _ := KeysFromConn(server)
	if sk2.LocalSeq <= sk.LocalSeq || sk2.LocalSeq >= sk.SealerStart() {
		t.Errorf("pion's LocalSeq %d, exported %d", sk2.LocalSeq, sk.LocalSeq)
	}
	co, err := NewOpener(ck, 1024)
	if err != nil {
		t.Fatal(err)
	}
	in := bytes.Clone(finished[1])
	if _, _, err := co.Open(finished[1]); !errors.Is(err, ErrReplay) || !bytes.Equal(in, finished[1]) {
		t.Fatalf("retransmitted Finished to our opener: %v", err)
	}

	ss, err := NewSealer(sk, sk.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	want := payload(300, 7)
	rec := sealInto(t, ss, want, ApplicationData)
	se.WriteTo(bytes.Clone(rec), ce.laddr)
	if got := pionRead(t, client); !bytes.Equal(got, want) {
		t.Fatal("pion client read the wrong payload")
	}
	if _, got, err := co.Open(rec); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("our opener: %v", err)
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

// TestKeysFromPionCIDBounds: a state whose connection ID could not be on
// the wire (over 255 bytes) is refused; gob matches pionState's fields by
// name, as it does pion's serializedState.
func TestKeysFromPionCIDBounds(t *testing.T) {
	st := pionState{
		HandshakeComplete: true, LocalEpoch: 1, RemoteEpoch: 1, IsClient: true,
		CipherSuiteID: uint16(TLS_PSK_WITH_AES_128_GCM_SHA256), MasterSecret: make([]byte, 48),
		LocalConnectionID: payload(8, 1), RemoteConnectionID: payload(5, 2),
	}
	enc := func(st pionState) []byte {
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(st); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	k, err := KeysFromPion(enc(st))
	if err != nil || !bytes.Equal(k.LocalCID, payload(5, 2)) || !bytes.Equal(k.RemoteCID, payload(8, 1)) {
		t.Fatalf("%v: local %x remote %x", err, k.LocalCID, k.RemoteCID)
	}
	st.LocalConnectionID = make([]byte, 256)
	if _, err := KeysFromPion(enc(st)); err == nil {
		t.Error("256-byte LocalConnectionID accepted")
	}
	st.LocalConnectionID, st.RemoteConnectionID = nil, make([]byte, 256)
	if _, err := KeysFromPion(enc(st)); err == nil {
		t.Error("256-byte RemoteConnectionID accepted")
	}
}

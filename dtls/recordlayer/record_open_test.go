package recordlayer

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"strconv"
	"testing"
)

// TestOpenRejects covers each refusal of Open.
func TestOpenRejects(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pair(t, s, 100)
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

			// Bit flips anywhere in the authenticated parts: the header
			// fields in the AAD, the explicit nonce, the ciphertext, the tag.
			for _, pos := range []int{0, 3, 4, 5, 10, HeaderLen, HeaderLen + 7, HeaderLen + 8, -16, -1} {
				rec := fresh()
				if pos < 0 {
					pos += len(rec)
				}
				rec[pos] ^= 0x40
				want := ErrAuth
				switch {
				case pos == 3 || pos == 4:
					want = ErrEpoch
				}
				expect("flip byte "+strconv.Itoa(pos), rec, want)
			}
			// Version and length are checked before the AEAD.
			rec := fresh()
			rec[2] = 0xff // FE FF: DTLS 1.0
			expect("version", rec, ErrVersion)
			rec = fresh()
			rec[12]++
			expect("length field +1", rec, ErrTruncated)
			rec = fresh()
			rec[12]--
			expect("length field -1", rec, ErrTruncated)

			// Wrong epoch, with a valid tag for it (another sealer in epoch 2).
			a, _ := testKeys(s)
			a.Epoch = 2
			se2, _ := NewSealer(a, 0)
			expect("epoch 2", sealInto(t, se2, []byte("x"), ApplicationData), ErrEpoch)

			// Truncations.
			rec = fresh()
			for _, n := range []int{0, 1, HeaderLen - 1, HeaderLen, HeaderLen + 5, len(rec) - 1} {
				expect("truncated to "+strconv.Itoa(n), rec[:n], ErrTruncated)
			}
			// A record too short for nonce and tag, with a consistent
			// length field.
			short := make([]byte, s.Overhead()-1)
			putHeader(short, ApplicationData, 1, 500, len(short)-HeaderLen)
			expect("body shorter than nonce+tag", short, ErrTruncated)
			// Too large (RFC 5246 section 6.2.3).
			big := make([]byte, HeaderLen+maxCiphertext+1)
			putHeader(big, ApplicationData, 1, 501, maxCiphertext+1)
			expect("over 2^14+2048", big, ErrTooLarge)

			// Forgeries did not move the window: a good record with the
			// next number still opens.
			if _, _, err := op.Open(fresh()); err != nil {
				t.Fatalf("good record after the forgeries: %v", err)
			}
		})
	}
}

func TestOpenReplay(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pair(t, s, 0)
			var recs [][]byte
			for i := range 3000 {
				recs = append(recs, sealInto(t, se, payload(20, byte(i)), ApplicationData))
			}
			open := func(i int) error {
				_, _, err := op.Open(bytes.Clone(recs[i]))
				return err
			}
			// Out of order within the window: each accepted once.
			for _, i := range []int{5, 3, 4, 0, 1, 2, 9, 6} {
				if err := open(i); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			for _, i := range []int{5, 3, 0, 9} {
				if err := open(i); !errors.Is(err, ErrReplay) {
					t.Fatalf("replay of %d: %v", i, err)
				}
			}
			// Jump ahead; the skipped ones still come in late, once.
			if err := open(1500); err != nil {
				t.Fatal(err)
			}
			if err := open(1500); !errors.Is(err, ErrReplay) {
				t.Fatal("replay of the newest")
			}
			for _, i := range []int{7, 8, 600, 1499} {
				if err := open(i); err != nil {
					t.Fatalf("late record %d: %v", i, err)
				}
				if err := open(i); !errors.Is(err, ErrReplay) {
					t.Fatalf("replay of late record %d: %v", i, err)
				}
			}
			// Move the window so that record 10 is older than it.
			if err := open(2999); err != nil {
				t.Fatal(err)
			}
			if op.Window() < 1024 || 2999-10 < op.Window() {
				t.Fatalf("window %d does not suit this test", op.Window())
			}
			err := open(10)
			if !errors.Is(err, ErrReplay) {
				t.Fatalf("record older than the window: %v", err)
			}
			if err := open(2999 - op.Window() + 1); err != nil {
				t.Fatalf("oldest record inside the window: %v", err)
			}
		})
	}
}

// TestOpenerStartsAtRemoteSeq: records pion consumed (below RemoteSeq)
// are refused, the next one is not.
func TestOpenerStartsAtRemoteSeq(t *testing.T) {
	a, b := testKeys(TLS_PSK_WITH_AES_128_GCM_SHA256)
	b.RemoteSeq = 3
	se, _ := NewSealer(a, 0)
	op, err := NewOpener(b, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		rec := sealInto(t, se, []byte("x"), Handshake)
		_, _, err := op.Open(rec)
		if (i < 3) != errors.Is(err, ErrReplay) || (i >= 3 && err != nil) {
			t.Errorf("seq %d: %v", i, err)
		}
	}
}

// TestOpenForeignExplicitNonce: RFC 5288 lets a sender choose its explicit
// nonce; Open must use the one in the record even when it is not
// epoch||seq.
func TestOpenForeignExplicitNonce(t *testing.T) {
	a, b := testKeys(TLS_PSK_WITH_AES_128_GCM_SHA256)
	op, err := NewOpener(b, 1024)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(a.LocalKey)
	aead, _ := cipher.NewGCM(block)
	msg := []byte("random explicit nonce")
	explicit := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	aad := []byte{0, 1, 0, 0, 0, 0, 0, 42, 23, 0xfe, 0xfd, 0, byte(len(msg))}
	body := append(bytes.Clone(explicit), aead.Seal(nil, append(bytes.Clone(a.LocalIV), explicit...), msg, aad)...)
	rec := make([]byte, HeaderLen, HeaderLen+len(body))
	putHeader(rec, ApplicationData, 1, 42, len(body))
	rec = append(rec, body...)
	hdr := bytes.Clone(rec[:HeaderLen+8])
	ct, got, err := op.Open(rec)
	if err != nil || ct != ApplicationData || !bytes.Equal(got, msg) {
		t.Fatalf("%v %q %v", ct, got, err)
	}
	if !bytes.Equal(rec[:HeaderLen+8], hdr) {
		t.Fatal("header or explicit nonce changed")
	}
}

func TestNextRecordAndParseHeader(t *testing.T) {
	se, op := pair(t, TLS_PSK_WITH_AES_128_GCM_SHA256, 7)
	var dg []byte
	for i := range 3 {
		dg = append(dg, sealInto(t, se, payload(10*i, byte(i)), ContentType(21+i))...)
	}
	rest := dg
	for i := range 3 {
		var rec []byte
		var err error
		rec, rest, err = NextRecord(rest)
		if err != nil {
			t.Fatal(err)
		}
		ct, epoch, seq, length, err := ParseHeader(rec)
		if err != nil || ct != ContentType(21+i) || epoch != 1 || seq != uint64(7+i) || length != 10*i+37-HeaderLen {
			t.Fatalf("record %d: %v %d %d %d %v", i, ct, epoch, seq, length, err)
		}
		if cap(rec) != len(rec) {
			t.Fatal("rec's capacity reaches into the rest")
		}
		gotCT, got, err := op.Open(rec)
		if err != nil || gotCT != ContentType(21+i) || !bytes.Equal(got, payload(10*i, byte(i))) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if len(rest) != 0 {
		t.Fatal("bytes left")
	}
	if _, _, err := NextRecord(dg[:HeaderLen-1]); !errors.Is(err, ErrTruncated) {
		t.Error("short header")
	}
	if _, _, err := NextRecord(dg[:36]); !errors.Is(err, ErrTruncated) {
		t.Error("length past the end")
	}
	if _, _, _, _, err := ParseHeader(dg[:12]); !errors.Is(err, ErrTruncated) {
		t.Error("ParseHeader short")
	}
	// A DTLS 1.0 ClientHello header parses: routing must see it.
	ch := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100}
	if ct, epoch, seq, length, err := ParseHeader(ch); err != nil || ct != Handshake || epoch != 0 || seq != 0 || length != 100 {
		t.Errorf("ClientHello header: %v %d %d %d %v", ct, epoch, seq, length, err)
	}
	if ContentType(23).String() != "application_data" || ContentType(99).String() != "content_type(99)" {
		t.Error("ContentType.String")
	}
}

package ktlsbridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"
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

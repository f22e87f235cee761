package recordlayer

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pion/dtls/v3"
)

func TestPionInterop(t *testing.T) {
	suites := []struct {
		name string
		id   dtls.CipherSuiteID
		cert bool
	}{
		{"PSK-AES128-GCM", dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, false},
		{"PSK-CHACHA20", dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, false},
		{"ECDHE-PSK-CHACHA20", dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, false},
		{"ECDHE-ECDSA-AES128-GCM", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{"ECDHE-ECDSA-AES256-GCM-SHA384", dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{"ECDHE-ECDSA-CHACHA20", dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
	}
	for _, tc := range suites {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := pskConfig(tc.id), pskConfig(tc.id)
			if tc.cert {
				cc, sc = certConfigs(t, tc.id)
			}
			p := handshake(t, cc, sc)
			testInterop(t, p, Suite(tc.id))
		})
	}
}

func testInterop(t *testing.T, p *pionPair, suite Suite) {
	ck, sk := p.ck, p.sk
	if ck.Suite != suite || sk.Suite != suite {
		t.Fatalf("suites %v/%v, want %v", ck.Suite, sk.Suite, suite)
	}
	if ck.Epoch != 1 || sk.Epoch != 1 {
		t.Fatalf("epochs %d/%d, want 1", ck.Epoch, sk.Epoch)
	}
	// Each side's write keys are the other's read keys.
	if !bytes.Equal(ck.LocalKey, sk.RemoteKey) || !bytes.Equal(ck.LocalIV, sk.RemoteIV) ||
		!bytes.Equal(ck.RemoteKey, sk.LocalKey) || !bytes.Equal(ck.RemoteIV, sk.LocalIV) {
		t.Fatal("client and server keys do not mirror each other")
	}
	if bytes.Equal(ck.LocalKey, ck.RemoteKey) {
		t.Fatal("both directions have the same key")
	}
	// Each side sent one record in epoch 1 (its Finished) and received
	// the other's.
	t.Logf("client LocalSeq=%d RemoteSeq=%d, server LocalSeq=%d RemoteSeq=%d",
		ck.LocalSeq, ck.RemoteSeq, sk.LocalSeq, sk.RemoteSeq)
	if ck.LocalSeq != 1 || sk.LocalSeq != 1 || ck.RemoteSeq != 1 || sk.RemoteSeq != 1 {
		t.Fatalf("sequence numbers after the handshake: client %d/%d server %d/%d, want all 1",
			ck.LocalSeq, ck.RemoteSeq, sk.LocalSeq, sk.RemoteSeq)
	}

	// (a) Our sealer, with the client's keys and the safe start, to pion's
	// server: pion's replay window takes the jump forward.
	cs, err := NewSealer(ck, ck.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{1400, 0, 1, 100} {
		want := payload(n, byte(i))
		rec := sealInto(t, cs, want, ApplicationData)
		if len(rec) != n+suite.Overhead() {
			t.Fatalf("record of %d bytes for %d of payload", len(rec), n)
		}
		if _, err := p.clientEnd.WriteTo(rec, p.serverEnd.laddr); err != nil {
			t.Fatal(err)
		}
		if got := pionRead(t, p.server); !bytes.Equal(got, want) {
			t.Fatalf("pion server read %d bytes, want %d", len(got), len(want))
		}
	}
	// Several records in one datagram (RFC 6347 section 4.1.1).
	threeInOneDatagram(t, p, cs)

	// (b) pion's server writes; the raw datagram is taken before pion's
	// client sees it and opened with our Opener and the client's keys.
	tap := make(chan []byte, 16)
	p.clientEnd.tap.Store(&tap)
	co, err := NewOpener(ck, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{1400, 1, 700} {
		want := payload(n, byte(100+i))
		if _, err := p.server.Write(want); err != nil {
			t.Fatal(err)
		}
		raw := readTap(t, tap)
		rec, rest, err := NextRecord(raw)
		if err != nil || len(rest) != 0 {
			t.Fatalf("NextRecord: %v, %d bytes left", err, len(rest))
		}
		_, epoch, seq, _, _ := ParseHeader(rec)
		// pion keeps counting from LocalSeq: this is why SeqGap exists.
		if epoch != 1 || seq != sk.LocalSeq+uint64(i) {
			t.Fatalf("pion sent epoch %d seq %d, want 1/%d", epoch, seq, sk.LocalSeq+uint64(i))
		}
		ct, got, err := co.Open(rec)
		if err != nil {
			t.Fatalf("Open pion's record: %v", err)
		}
		if ct != ApplicationData || !bytes.Equal(got, want) {
			t.Fatalf("opened %v %d bytes, want application_data %d", ct, len(got), len(want))
		}
		// A second copy of the same datagram is a replay.
		if _, _, err := co.Open(bytes.Clone(raw)); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of pion's record: %v", err)
		}
	}
	p.clientEnd.tap.Store(nil)

	// The other roles: our sealer with the server's keys to pion's client,
	// pion's client to our opener with the server's keys.
	ss, err := NewSealer(sk, sk.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	want := payload(1200, 42)
	p.serverEnd.WriteTo(sealInto(t, ss, want, ApplicationData), p.clientEnd.laddr)
	if got := pionRead(t, p.client); !bytes.Equal(got, want) {
		t.Fatal("pion client read the wrong payload")
	}
	p.serverEnd.tap.Store(&tap)
	so, err := NewOpener(sk, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.client.Write(want); err != nil {
		t.Fatal(err)
	}
	rec, _, err := NextRecord(readTap(t, tap))
	if err != nil {
		t.Fatal(err)
	}
	if ct, got, err := so.Open(rec); err != nil || ct != ApplicationData || !bytes.Equal(got, want) {
		t.Fatalf("open pion client's record: %v %v", ct, err)
	}
	p.serverEnd.tap.Store(nil)

	// Our own two ends agree as well (same keys as pion's).
	rec = sealInto(t, cs, want, Alert)
	if ct, got, err := so.Open(rec); err != nil || ct != Alert || !bytes.Equal(got, want) {
		t.Fatalf("our sealer to our opener: %v %v", ct, err)
	}
}

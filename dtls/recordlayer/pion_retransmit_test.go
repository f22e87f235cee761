package recordlayer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// records returns the headers of all records in a datagram.
type hdr struct {
	ct    ContentType
	epoch uint16
	seq   uint64
}

func records(dg []byte) ([]hdr, error) {
	var hs []hdr
	for len(dg) > 0 {
		rec, rest, err := NextRecord(dg)
		if err != nil {
			return hs, err
		}
		ct, epoch, seq, _, _ := ParseHeader(rec)
		hs = append(hs, hdr{ct, epoch, seq})
		dg = rest
	}
	return hs, nil
}

// lossyHandshake runs a pion handshake over the memPipe ends ce (client)
// and se (server) with cfg and a short retransmission interval (the
// caller's drop filter loses part of a flight), until the server has
// completed and its keys are taken over. The client's handshake is still
// under way; its result comes on clientDone.
func lossyHandshake(t *testing.T, ce, se *memConn, cfg *dtls.Config) (server, client *dtls.Conn, sk Keys, clientDone <-chan error) {
	t.Helper()
	cfg.FlightInterval = 50 * time.Millisecond
	server, err := dtls.Server(se, ce.laddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err = dtls.Client(ce, se.laddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ce.Close(); se.Close(); client.Close(); server.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- client.HandshakeContext(ctx) }()
	if err := server.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if sk, err = KeysFromConn(server); err != nil {
		t.Fatal(err)
	}
	return server, client, sk, done
}

// TestPionRetransmitAfterTakeover shows why Sealer starts SeqGap above
// pion: the server's final flight (ChangeCipherSpec, Finished) is lost, the
// server has completed and exported its keys, and then the client's
// retransmitted flight makes pion's server send its Finished again, in
// epoch 1, with the data keys, numbered from pion's own counter: exactly
// the LocalSeq of the export. A sealer started at LocalSeq would have used
// the same nonce for a different plaintext.
func TestPionRetransmitAfterTakeover(t *testing.T) {
	ce, se := memPipe()
	// Lose the first datagram of the server that carries an epoch-1
	// record: its Finished.
	var dropped atomic.Bool
	dropFinished := func(dg []byte) bool {
		hs, _ := records(dg)
		for _, h := range hs {
			if h.epoch == 1 && !dropped.Load() {
				dropped.Store(true)
				return true
			}
		}
		return false
	}
	ce.drop.Store(&dropFinished)

	// The takeover on the server: its Finished went out (and was lost).
	server, client, sk, clientDone := lossyHandshake(t, ce, se, pskConfig(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256))
	ce.logMu.Lock()
	before := len(ce.log)
	ce.logMu.Unlock()

	if err := <-clientDone; err != nil {
		t.Fatalf("client handshake after the retransmission: %v", err)
	}
	if !dropped.Load() {
		t.Fatal("nothing dropped")
	}
	ck, err := KeysFromConn(client)
	if err != nil {
		t.Fatal(err)
	}

	// What the server sent after its keys were exported.
	ce.logMu.Lock()
	after := ce.log[before:]
	ce.logMu.Unlock()
	var finished []hdr
	for _, dg := range after {
		hs, err := records(dg)
		if err != nil {
			t.Fatalf("datagram from pion: %v", err)
		}
		for _, h := range hs {
			if h.epoch == 1 {
				finished = append(finished, h)
			}
		}
	}
	if len(finished) == 0 {
		t.Fatal("server retransmitted no epoch-1 record")
	}
	for _, h := range finished {
		t.Logf("server retransmitted %v epoch %d seq %d after export (export LocalSeq %d)", h.ct, h.epoch, h.seq, sk.LocalSeq)
		if h.ct != Handshake || h.seq < sk.LocalSeq || h.seq >= sk.SealerStart() {
			t.Fatalf("retransmission %v seq %d outside [LocalSeq %d, SealerStart %d)",
				h.ct, h.seq, sk.LocalSeq, sk.SealerStart())
		}
	}
	if finished[0].seq != sk.LocalSeq {
		t.Fatalf("first retransmitted Finished has seq %d, want the exported LocalSeq %d", finished[0].seq, sk.LocalSeq)
	}
	// The client saw only the retransmitted Finished, so its RemoteSeq is
	// past it; pion's counter moved on.
	if ck.RemoteSeq != finished[len(finished)-1].seq+1 {
		t.Errorf("client RemoteSeq %d, want %d", ck.RemoteSeq, finished[len(finished)-1].seq+1)
	}
	sk2, err := KeysFromConn(server)
	if err != nil {
		t.Fatal(err)
	}
	if sk2.LocalSeq <= sk.LocalSeq {
		t.Errorf("pion's LocalSeq %d did not move past %d", sk2.LocalSeq, sk.LocalSeq)
	}

	// And data still flows: our server sealer to pion's client and to our
	// client opener.
	ss, err := NewSealer(sk, sk.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	co, err := NewOpener(ck, 1024)
	if err != nil {
		t.Fatal(err)
	}
	bothOpen(t, ss, co, se, ce, client)
}

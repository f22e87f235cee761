package recordlayer

import (
	"bytes"
	"encoding/gob"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/pion/dtls/v3"
)

func cidPSKConfig(suite dtls.CipherSuiteID, gen func() []byte) *dtls.Config {
	c := pskConfig(suite)
	c.ConnectionIDGenerator = gen
	return c
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
	threeInOneDatagram(t, p, cs)
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
	bothOpen(t, ss, co, se, ce, client)
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

package record

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
)

// memConn is one end of an in-memory datagram link, a net.PacketConn for
// pion. A datagram written to one end arrives at the other end's inbox,
// unless that end has a tap set: then it goes to the tap instead and pion
// never sees it, which is what kvpn's demultiplexer does after takeover.
type memConn struct {
	laddr, raddr net.Addr
	peer         *memConn
	inbox        chan []byte
	tap          atomic.Pointer[chan []byte]
	// drop, if set, is asked about every datagram arriving here.
	drop atomic.Pointer[func([]byte) bool]

	logMu sync.Mutex
	log   [][]byte // every datagram that arrived, for inspection

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed when the read deadline changes

	done      chan struct{}
	closeOnce sync.Once
}

func memPipe() (a, b *memConn) {
	aAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001}
	bAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40002}
	a = &memConn{laddr: aAddr, raddr: bAddr, inbox: make(chan []byte, 256), changed: make(chan struct{}), done: make(chan struct{})}
	b = &memConn{laddr: bAddr, raddr: aAddr, inbox: make(chan []byte, 256), changed: make(chan struct{}), done: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

// deliver puts a datagram into c as if it came from the peer.
func (c *memConn) deliver(p []byte) {
	p = bytes.Clone(p)
	c.logMu.Lock()
	c.log = append(c.log, p)
	c.logMu.Unlock()
	if f := c.drop.Load(); f != nil && (*f)(p) {
		return
	}
	if t := c.tap.Load(); t != nil {
		*t <- p
		return
	}
	select {
	case c.inbox <- p:
	default: // a full socket buffer drops, like UDP
	}
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, changed := c.deadline, c.changed
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p := <-c.inbox:
			return copy(b, p), c.raddr, nil
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
		case <-c.done:
			return 0, nil, net.ErrClosed
		}
	}
}

func (c *memConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.peer.deliver(p)
	return len(p), nil
}

func (c *memConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr { return c.laddr }

func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// pionPair is a client and a server pion Conn after a completed handshake
// over a memPipe.
type pionPair struct {
	client, server       *dtls.Conn
	clientEnd, serverEnd *memConn
	ck, sk               Keys // KeysFromConn of each side
}

func pskConfig(suite dtls.CipherSuiteID) *dtls.Config {
	return &dtls.Config{
		PSK: func(identity []byte) ([]byte, error) {
			return []byte("kvpn test pre-shared key, 32 by"), nil
		},
		PSKIdentityHint: []byte("psk"),
		CipherSuites:    []dtls.CipherSuiteID{suite},
	}
}

func certConfigs(t *testing.T, suite dtls.CipherSuiteID) (client, server *dtls.Config) {
	cert, err := selfsign.GenerateSelfSigned() // ECDSA P-256
	if err != nil {
		t.Fatal(err)
	}
	server = &dtls.Config{Certificates: []tls.Certificate{cert}, CipherSuites: []dtls.CipherSuiteID{suite}}
	client = &dtls.Config{InsecureSkipVerify: true, CipherSuites: []dtls.CipherSuiteID{suite}}
	return client, server
}

// handshake runs a real pion DTLS 1.2 handshake in memory and exports both
// sides' keys.
func handshake(t *testing.T, clientCfg, serverCfg *dtls.Config) *pionPair {
	t.Helper()
	p := handshakeOnly(t, clientCfg, serverCfg)
	var err error
	if p.ck, err = KeysFromConn(p.client); err != nil {
		t.Fatal(err)
	}
	if p.sk, err = KeysFromConn(p.server); err != nil {
		t.Fatal(err)
	}
	return p
}

// handshakeOnly is handshake without the key export.
func handshakeOnly(t *testing.T, clientCfg, serverCfg *dtls.Config) *pionPair {
	t.Helper()
	ce, se := memPipe()
	server, err := dtls.Server(se, ce.laddr, serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dtls.Client(ce, se.laddr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	// Closing pion is fine in a test; kvpn never closes it after takeover.
	t.Cleanup(func() {
		ce.Close()
		se.Close()
		client.Close()
		server.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return &pionPair{client: client, server: server, clientEnd: ce, serverEnd: se}
}

// pionRead reads one application-data payload from a pion Conn.
func pionRead(t *testing.T, c *dtls.Conn) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("pion Read: %v", err)
	}
	return b[:n]
}

func readTap(t *testing.T, tap chan []byte) []byte {
	t.Helper()
	select {
	case d := <-tap:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram from pion")
		return nil
	}
}

func payload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}

// sealInto seals p with s from a fresh buffer with exactly the room needed.
func sealInto(t testing.TB, s *Sealer, p []byte, ct ContentType) []byte {
	t.Helper()
	buf := make([]byte, s.Headroom()+len(p)+s.Tailroom())
	copy(buf[s.Headroom():], p)
	rec, err := s.Seal(buf, s.Headroom(), len(p), ct)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

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

// TestKeysFromPionRejects: states the record layer cannot use are refused.
func TestKeysFromPionRejects(t *testing.T) {
	if _, err := KeysFromPion([]byte("not a gob")); err == nil {
		t.Error("garbage accepted")
	}
	if _, err := KeysFromPion(nil); err == nil {
		t.Error("empty state accepted")
	}
	// A pion suite we do not implement (CCM).
	p := handshakeOnly(t, pskConfig(dtls.TLS_PSK_WITH_AES_128_CCM), pskConfig(dtls.TLS_PSK_WITH_AES_128_CCM))
	st, ok := p.client.ConnectionState()
	if !ok {
		t.Fatal("no state")
	}
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := KeysFromPion(b); !errors.Is(err, ErrSuite) {
		t.Errorf("CCM suite: %v, want ErrSuite", err)
	}
}

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

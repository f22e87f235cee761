package dtls

// Test doubles and a loopback environment for the Listener and
// ClientChannel tests: a recording Owner and sink, and a Listener on
// 127.0.0.1. The UDP relay ("NAT") between client and server that
// captures, drops, injects and rebinds to a new port is in env_relay_test.go.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/udp"
)

// room is the headroom tests give every packet buffer (Headroom is 22 for
// GCM, 14 for ChaCha20); tail the tailroom.
const (
	room = 32
	tail = Tailroom
)

// waitFor polls cond every millisecond until it holds or 5 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// testOwner is the Owner double: Check accepts what looks like IPv4 and
// records every call; PeerUp records the peer and, like server.Session,
// closes the one it replaces.
type testOwner struct {
	checks atomic.Int64

	mu    sync.Mutex
	peers []*Peer
	onUp  func(p *Peer) // called at the end of PeerUp, if set (setOnUp)
}

func (o *testOwner) setOnUp(f func(p *Peer)) {
	o.mu.Lock()
	o.onUp = f
	o.mu.Unlock()
}

func (o *testOwner) Check(pkt []byte) (bool, error) {
	o.checks.Add(1)
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return false, nil
	}
	return true, nil
}

func (o *testOwner) PeerUp(p *Peer) {
	o.mu.Lock()
	var old *Peer
	if len(o.peers) > 0 {
		old = o.peers[len(o.peers)-1]
	}
	o.peers = append(o.peers, p)
	onUp := o.onUp
	o.mu.Unlock()
	if old != nil && old != p {
		old.Close()
	}
	if onUp != nil {
		onUp(p)
	}
}

func (o *testOwner) ups() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.peers)
}

func (o *testOwner) last() *Peer {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.peers) == 0 {
		return nil
	}
	return o.peers[len(o.peers)-1]
}

func (o *testOwner) all() []*Peer {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*Peer(nil), o.peers...)
}

// tunRecorder is the TUN double: it keeps a copy of every packet written
// and checks the offset contract (packets at bufs[i][offset:]).
type tunRecorder struct {
	// discard makes Write count packets and bytes only (benchmarks).
	discard          atomic.Bool
	nDiscard, nBytes atomic.Int64

	mu     sync.Mutex
	pkts   [][]byte
	spare  []int // cap - len of each packet's view (room for GRO)
	errs   []string
	writes int
}

func (r *tunRecorder) Write(bufs [][]byte, offset int) (int, error) {
	if r.discard.Load() {
		n := 0
		for _, b := range bufs {
			n += len(b) - offset
		}
		r.nBytes.Add(int64(n))
		r.nDiscard.Add(int64(len(bufs)))
		return len(bufs), nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if offset != SinkHeadroom {
		r.errs = append(r.errs, fmt.Sprintf("Write with offset %d, want %d", offset, SinkHeadroom))
	}
	for _, b := range bufs {
		if len(b) < offset {
			r.errs = append(r.errs, fmt.Sprintf("buffer of %d bytes shorter than offset %d", len(b), offset))
			continue
		}
		r.pkts = append(r.pkts, bytes.Clone(b[offset:]))
		r.spare = append(r.spare, cap(b)-len(b))
	}
	return len(bufs), nil
}

func (r *tunRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pkts)
}

func (r *tunRecorder) packets() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.pkts...)
}

// take returns the recorded packets and forgets them.
func (r *tunRecorder) take() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pkts
	r.pkts = nil
	return p
}

func (r *tunRecorder) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("Sink: %s", e)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testServer is a Listener serving on 127.0.0.1 with one known App-ID.
type testServer struct {
	l      *Listener
	conn   *udp.Conn
	addr   netip.AddrPort
	tun    *tunRecorder
	owner  *testOwner
	appID  []byte
	psk    []byte
	chacha bool
	finds  atomic.Int64
	known  atomic.Bool // Find answers for appID
	cid    atomic.Bool // Find and dial negotiate connection IDs
	// other, if set, is the Owner Find returns instead of owner (tests
	// with several sessions: testOwner closes the peer it replaces).
	other atomic.Pointer[testOwner]
	// legacy, if set, makes Find answer with this legacy offer.
	legacy atomic.Pointer[Legacy]
}

// connectOwn dials through addr as a session of its own Owner and waits
// for its peer.
func (s *testServer) connectOwn(t testing.TB, addr netip.AddrPort) (*ClientChannel, *Peer) {
	t.Helper()
	o := &testOwner{}
	s.other.Store(o)
	defer s.other.Store(nil)
	c := s.dial(t, addr)
	waitFor(t, "PeerUp", func() bool { return o.ups() == 1 })
	return c, o.last()
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	crand.Read(b)
	return b
}

func newTestServer(t testing.TB, chacha bool) *testServer {
	t.Helper()
	return newTestServerGroup(t, chacha, 1)
}

// newTestServerGroup is newTestServer on an SO_REUSEPORT group of n
// sockets, one reader each.
func newTestServerGroup(t testing.TB, chacha bool, n int) *testServer {
	t.Helper()
	conns, err := udp.ListenGroup("127.0.0.1:0", n)
	if err != nil {
		t.Fatal(err)
	}
	conn := conns[0]
	s := &testServer{
		conn: conn, tun: &tunRecorder{}, owner: &testOwner{},
		appID: randBytes(AppIDLen), psk: randBytes(PSKLen), chacha: chacha,
	}
	s.known.Store(true)
	s.addr = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	s.l = NewListener(ListenerConfig{Conn: conn, Readers: conns[1:], Find: s.find, Sink: s.tun, Log: quietLog()})
	done := make(chan error, 1)
	go func() { done <- s.l.Serve() }()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after the socket closed")
		}
		s.closePeers()
		s.tun.check(t)
	})
	return s
}

func (s *testServer) find(appID []byte) (Match, bool) {
	s.finds.Add(1)
	if !s.known.Load() || !bytes.Equal(appID, s.appID) {
		return Match{}, false
	}
	var owner Owner = s.owner
	if o := s.other.Load(); o != nil {
		owner = o
	}
	return Match{Owner: owner, PSK: s.psk, ChaCha: s.chacha, CID: s.cid.Load(), Legacy: s.legacy.Load()}, true
}

// closePeers closes every peer the listener or the owner knows, which
// also ends handshakes in progress (their feed closes).
func (s *testServer) closePeers() {
	s.l.mu.RLock()
	var ps []*Peer
	for _, p := range s.l.byAddr {
		ps = append(ps, p)
	}
	s.l.mu.RUnlock()
	ps = append(ps, s.owner.all()...)
	for _, p := range ps {
		p.Close()
	}
}

// peerCount is the number of addresses the listener routes.
func (s *testServer) peerCount() int {
	s.l.mu.RLock()
	defer s.l.mu.RUnlock()
	return len(s.l.byAddr)
}

// dial connects a client to addr (the server, or a relay in front of it).
func (s *testServer) dial(t testing.TB, addr netip.AddrPort) *ClientChannel {
	t.Helper()
	c, err := Dial(context.Background(), ClientConfig{
		Server: addr, AppID: s.appID, PSK: s.psk, Timeout: 5 * time.Second, ChaCha: s.chacha, CID: s.cid.Load(),
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitPeer waits for the n-th PeerUp and returns that peer.
func (s *testServer) waitPeer(t testing.TB, n int) *Peer {
	t.Helper()
	waitFor(t, fmt.Sprintf("PeerUp #%d", n), func() bool { return s.owner.ups() >= n })
	return s.owner.all()[n-1]
}

// connect dials through addr and waits for the server's peer.
func (s *testServer) connect(t testing.TB, addr netip.AddrPort) (*ClientChannel, *Peer) {
	t.Helper()
	n := s.owner.ups()
	c := s.dial(t, addr)
	return c, s.waitPeer(t, n+1)
}

// goroutinesSettle waits until runtime.NumGoroutine is at most limit and
// returns the last count.
func goroutinesSettle(limit int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= limit || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

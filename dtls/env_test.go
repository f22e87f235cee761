package dtls

// Test doubles and a loopback environment for the Listener and
// ClientChannel tests: a recording Owner and TUN writer, a Listener on
// 127.0.0.1, and a UDP relay ("NAT") between client and server that
// captures, drops, injects and rebinds to a new port.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/dtls/record"
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

// ipv4Packet returns a packet of size bytes (at least 20) that passes
// testOwner.Check, filled from rng.
func ipv4Packet(rng *rand.Rand, size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	p[0] = 0x45
	p[2], p[3] = byte(size>>8), byte(size)
	return p
}

func randomPackets(rng *rand.Rand, n int) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = ipv4Packet(rng, 20+rng.IntN(1400-20+1))
	}
	return pkts
}

// withRoom copies pkts into buffers with room bytes of headroom and the
// tailroom a record needs in their capacity.
func withRoom(pkts [][]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, room+len(p), room+len(p)+tail)
		copy(b[room:], p)
		bufs[i] = b
	}
	return bufs
}

// clientSend sends pkts from c and waits until the server's TUN has them;
// it returns what the TUN got (and forgets it).
func clientSend(t testing.TB, s *testServer, c *ClientChannel, pkts [][]byte) [][]byte {
	t.Helper()
	before := s.tun.count()
	if err := c.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatalf("client WritePackets: %v", err)
	}
	waitFor(t, fmt.Sprintf("%d packets at the TUN", len(pkts)), func() bool { return s.tun.count() >= before+len(pkts) })
	return s.tun.take()[before:]
}

// clientRead reads until n packets arrived at c (or 5 s passed) and
// returns copies of them.
func clientRead(t testing.TB, c *ClientChannel, n int) [][]byte {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, room+2048)
	}
	sizes := make([]int, len(bufs))
	var got [][]byte
	for len(got) < n {
		k, err := c.ReadPackets(bufs, sizes, room)
		for i := range k {
			got = append(got, bytes.Clone(bufs[i][room:room+sizes[i]]))
		}
		if err != nil {
			t.Fatalf("client ReadPackets after %d of %d packets: %v", len(got), n, err)
		}
	}
	return got
}

// clientReadOnce makes one ReadPackets call with a deadline d away and
// returns its packets and error.
func clientReadOnce(c *ClientChannel, d time.Duration) ([][]byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, room+2048)
	}
	sizes := make([]int, len(bufs))
	k, err := c.ReadPackets(bufs, sizes, room)
	var got [][]byte
	for i := range k {
		got = append(got, bytes.Clone(bufs[i][room:room+sizes[i]]))
	}
	return got, err
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func samePackets(t testing.TB, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d packets, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: packet %d differs: %d bytes %x..., want %d bytes %x...",
				what, i, len(got[i]), got[i][:min(16, len(got[i]))], len(want[i]), want[i][:min(16, len(want[i]))])
		}
	}
}

// relay is a UDP relay between a client and the server, like a NAT: the
// client talks to down, the relay talks to the server from up. It records
// every datagram, can hold back datagrams, inject its own from either
// side, and move up to a new port (NAT rebinding).
type relay struct {
	t      testing.TB
	down   *net.UDPConn
	server netip.AddrPort

	mu       sync.Mutex
	up       *net.UDPConn
	client   netip.AddrPort
	upCap    [][]byte // client -> server
	downCap  [][]byte // server -> client
	dropUp   func([]byte) bool
	dropDown func([]byte) bool

	wg sync.WaitGroup
}

func listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newRelay(t testing.TB, server netip.AddrPort) *relay {
	r := &relay{t: t, down: listenUDP(t, "127.0.0.1:0"), server: server}
	r.up = listenUDP(t, "127.0.0.1:0")
	r.wg.Add(2)
	go r.downLoop()
	go r.upLoop(r.up)
	t.Cleanup(func() {
		r.down.Close()
		r.mu.Lock()
		r.up.Close()
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// Addr is where the client should send.
func (r *relay) Addr() netip.AddrPort { return r.down.LocalAddr().(*net.UDPAddr).AddrPort() }

// UpAddr is the client's address as the server sees it.
func (r *relay) UpAddr() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (r *relay) downLoop() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.down.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dg := bytes.Clone(buf[:n])
		r.mu.Lock()
		r.client = from
		r.upCap = append(r.upCap, dg)
		drop := r.dropUp != nil && r.dropUp(dg)
		up := r.up
		r.mu.Unlock()
		if !drop {
			up.WriteToUDPAddrPort(dg, r.server)
		}
	}
}

func (r *relay) upLoop(up *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := up.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dg := bytes.Clone(buf[:n])
		r.mu.Lock()
		r.downCap = append(r.downCap, dg)
		drop := r.dropDown != nil && r.dropDown(dg)
		client := r.client
		r.mu.Unlock()
		if !drop && client.IsValid() {
			r.down.WriteToUDPAddrPort(dg, client)
		}
	}
}

// Rebind moves the relay's server side to a new port and returns it.
func (r *relay) Rebind() netip.AddrPort {
	nu := listenUDP(r.t, "127.0.0.1:0")
	r.mu.Lock()
	old := r.up
	r.up = nu
	r.mu.Unlock()
	old.Close()
	r.wg.Add(1)
	go r.upLoop(nu)
	return nu.LocalAddr().(*net.UDPAddr).AddrPort()
}

// InjectUp sends dg to the server from the client's (relayed) address.
func (r *relay) InjectUp(dg []byte) {
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	if _, err := up.WriteToUDPAddrPort(dg, r.server); err != nil {
		r.t.Errorf("InjectUp: %v", err)
	}
}

// InjectDown sends dg to the client from the server's (relayed) address.
func (r *relay) InjectDown(dg []byte) {
	r.mu.Lock()
	client := r.client
	r.mu.Unlock()
	if _, err := r.down.WriteToUDPAddrPort(dg, client); err != nil {
		r.t.Errorf("InjectDown: %v", err)
	}
}

func (r *relay) setDrop(up, down func([]byte) bool) {
	r.mu.Lock()
	r.dropUp, r.dropDown = up, down
	r.mu.Unlock()
}

// captured returns the datagrams seen so far in one direction whose first
// byte is ct (any if ct is 0).
func (r *relay) captured(toServer bool, ct byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	src := r.downCap
	if toServer {
		src = r.upCap
	}
	var out [][]byte
	for _, dg := range src {
		if ct == 0 || (len(dg) > 0 && dg[0] == ct) {
			out = append(out, dg)
		}
	}
	return out
}

// isData reports whether dg is an application_data record (a data or
// control record after the handshake).
func isData(dg []byte) bool { return len(dg) > 0 && dg[0] == 23 }

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

// sealAlert seals an alert record (level, description) with d's keys, as
// the peer's record layer would send it.
func sealAlert(t testing.TB, d *datapath, level, desc byte) []byte {
	t.Helper()
	d.cmu.Lock()
	defer d.cmu.Unlock()
	off := d.sealer.Headroom()
	buf := make([]byte, off+2+Tailroom)
	buf[off], buf[off+1] = level, desc
	rec, err := d.sealer.Seal(buf, off, 2, record.Alert)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

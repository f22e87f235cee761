package dtls

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
	"kvpn/udp"
)

// natListener is a Listener with no reader whose Finder knows the App-IDs
// that start with 0xab; datagrams go in through handle.
func natListener(t *testing.T) *Listener {
	t.Helper()
	conn, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	owner := &testOwner{}
	l := NewListener(ListenerConfig{Conn: conn, Sink: &tunRecorder{}, Log: quietLog(),
		Find: func(id []byte) (Match, bool) {
			return Match{Owner: owner, PSK: bytes.Repeat([]byte{1}, PSKLen)}, id[0] == 0xab
		}})
	t.Cleanup(func() {
		l.mu.RLock()
		var ps []*Peer
		for _, p := range l.byAddr {
			ps = append(ps, p)
		}
		for _, p := range l.pending {
			ps = append(ps, p)
		}
		l.mu.RUnlock()
		for _, p := range ps {
			p.Close()
		}
		conn.Close()
	})
	return l
}

// TestHelloFloodBehindNAT: 1000 users behind one NAT address start their
// DTLS handshakes while the same address floods ClientHellos with random
// App-IDs: every user's handshake starts (a ClientHello naming a session's
// App-ID is not limited by its source address), and the flood starts none
// and leaves no state. Before, the per-address budget (burst 256) refused
// the users beyond it.
func TestHelloFloodBehindNAT(t *testing.T) {
	l := natListener(t)
	rng := rand.New(rand.NewPCG(11, 4))
	nat := netip.MustParseAddr("127.0.0.2")
	const users, junkPerUser = 1000, 20
	var out [][]byte
	for i := range users {
		for range junkPerUser {
			id := make([]byte, AppIDLen)
			for j := range id {
				id[j] = byte(rng.Uint32())
			}
			id[0] = 0x01                                                  // names no session
			src := netip.AddrPortFrom(nat, uint16(10000+rng.IntN(50000))) // not a user's port
			out = l.handle(src, clientHello(id), out)
		}
		id := make([]byte, AppIDLen)
		id[0] = 0xab
		binary.BigEndian.PutUint32(id[1:], uint32(i))
		out = l.handle(netip.AddrPortFrom(nat, uint16(2000+i)), clientHello(id), out)
	}
	if len(out) != 0 {
		t.Errorf("%d packets for the TUN from ClientHellos", len(out))
	}
	if n := l.Counters.HandshakeLimit.Load() + l.Counters.HandshakeBusy.Load(); n != 0 {
		t.Errorf("%d of %d users' handshakes refused (HandshakeLimit %d, HandshakeBusy %d)",
			n, users, l.Counters.HandshakeLimit.Load(), l.Counters.HandshakeBusy.Load())
	}
	l.mu.RLock()
	routed := len(l.byAddr)
	l.mu.RUnlock()
	if routed != users {
		t.Errorf("%d handshakes started for %d users", routed, users)
	}
	if n := l.Counters.NoSession.Load(); n != users*junkPerUser {
		t.Errorf("NoSession = %d, want %d (the flood)", n, users*junkPerUser)
	}
}

// TestHandshakesBounded: no more than maxHandshakes are in progress at
// once; the rest are refused and counted (HandshakeBusy), and a refused
// client gets in once the others are done.
func TestHandshakesBounded(t *testing.T) {
	l := natListener(t)
	l.handshakes.Store(maxHandshakes) // as if that many were under way
	id := make([]byte, AppIDLen)
	id[0] = 0xab
	src := netip.MustParseAddrPort("127.0.0.2:4000")
	l.handle(src, clientHello(id), nil)
	if n := l.Counters.HandshakeBusy.Load(); n != 1 {
		t.Fatalf("HandshakeBusy = %d, want 1", n)
	}
	l.mu.RLock()
	_, started := l.byAddr[src]
	l.mu.RUnlock()
	if started {
		t.Fatal("handshake started beyond maxHandshakes")
	}
	l.handshakes.Store(0)
	l.handle(src, clientHello(id), nil) // the client's retransmission
	l.mu.RLock()
	_, started = l.byAddr[src]
	l.mu.RUnlock()
	if !started || l.Counters.HandshakeLimit.Load() != 0 {
		t.Fatalf("retransmitted ClientHello not started (HandshakeLimit %d)", l.Counters.HandshakeLimit.Load())
	}
}

// roamPeer is an established peer at a with keys of its own (seed), and
// the Sealer its client seals with.
func roamPeer(t testing.TB, l *Listener, a netip.AddrPort, seed byte) (*Peer, *recordlayer.Sealer) {
	t.Helper()
	sk, ck := fuzzKeys(false)
	for _, k := range [][]byte{sk.LocalKey, sk.RemoteKey} {
		k[0], k[1], k[2] = seed, byte(a.Port()>>8), byte(a.Port())
	}
	ck.LocalKey, ck.RemoteKey = sk.RemoteKey, sk.LocalKey
	d, err := newDatapath(sk)
	if err != nil {
		t.Fatal(err)
	}
	s, err := recordlayer.NewSealer(ck, ck.SealerStart())
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{l: l, owner: &testOwner{}}
	p.setAddr(a)
	p.feed = newFeedConn(l.cfg.Conn.LocalAddr(), net.UDPAddrFromAddrPort(a), func([]byte) error { return nil })
	p.d.Store(d)
	l.mu.Lock()
	l.route(a, p)
	l.mu.Unlock()
	return p, s
}

// TestRoamCandidatesBounded: with 3000 peers, 1000 of them behind the
// source's NAT IP, a data record from an unknown port is tried against at
// most roamCandidates peers, not all of them; a peer whose NAT mapping
// moved to a new port is still found within a few of its datagrams (the
// peers of its IP are tried in turn), and so is one whose NAT changed its
// public IP, if after more.
func TestRoamCandidatesBounded(t *testing.T) {
	l := natListener(t)
	nat := netip.MustParseAddr("127.0.0.2")
	const perIP = 1000
	var behindNAT []*Peer
	var sealers []*recordlayer.Sealer
	for i := range perIP {
		p, s := roamPeer(t, l, netip.AddrPortFrom(nat, uint16(10000+i)), 1)
		behindNAT, sealers = append(behindNAT, p), append(sealers, s)
		roamPeer(t, l, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), uint16(10000+i)), 2)
		roamPeer(t, l, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.4"), uint16(10000+i)), 3)
	}
	ip := make([]byte, 40)
	ip[0] = 0x45

	// Junk from an unknown port of the NAT's IP: a bounded trial each.
	rng := rand.New(rand.NewPCG(7, 7))
	const junk = 10
	for i := range junk {
		l.handle(netip.AddrPortFrom(nat, uint16(50000+i)), junkData(rng), nil)
	}
	if n := l.Counters.RoamOpens.Load(); n > junk*roamCandidates {
		t.Fatalf("%d trial opens for %d junk datagrams, at most %d each", n, junk, roamCandidates)
	}
	if n := l.Counters.RoamOpens.Load(); n < junk*sameIPCandidates {
		t.Fatalf("%d trial opens for %d junk datagrams: the candidates were not tried", n, junk)
	}

	// The last peer behind the NAT moves to a new port: found within
	// perIP/sameIPCandidates+1 of its datagrams.
	moved := netip.AddrPortFrom(nat, 60000)
	p, s := behindNAT[perIP-1], sealers[perIP-1]
	tries := 0
	for p.Addr() != moved && tries <= perIP/sameIPCandidates+1 {
		l.handle(moved, sealFrom(t, s, cstp.TypeData, ip), nil)
		tries++
	}
	if p.Addr() != moved {
		t.Fatalf("peer not found after %d datagrams from its new port", tries)
	}
	t.Logf("new port: found after %d datagrams, %d trial opens in all", tries, l.Counters.RoamOpens.Load())

	// Another one's NAT changes its public IP: found by the sample of
	// other IPs, within a bounded number of its datagrams.
	l.roamBudget = newGlobalBucket(1e9, 1e9) // budgets are tested elsewhere
	l.roamSource = newRateLimiter[netip.Addr](1e9, 1e9, limiterEntries)
	moved = netip.MustParseAddrPort("127.0.0.9:4000")
	p, s = behindNAT[0], sealers[0]
	tries = 0
	// A specific peer is in a sample with a chance of 8/3000 per
	// datagram: 20 times the expected number of tries.
	const maxTries = 20 * 3 * perIP / (roamCandidates - sameIPCandidates)
	for p.Addr() != moved && tries < maxTries {
		l.handle(moved, sealFrom(t, s, cstp.TypeData, ip), nil)
		tries++
	}
	if p.Addr() != moved {
		t.Fatalf("peer with a new IP not found after %d datagrams", tries)
	}
	t.Logf("new IP: found after %d datagrams", tries)
	if n := l.Counters.Roamed.Load(); n != 2 {
		t.Errorf("Roamed = %d, want 2", n)
	}
}

// TestRoamSourceBudget: junk from one source IP spends at most that IP's
// budget of trial opens, and leaves the global budget to peers elsewhere,
// which still roam by trial during it.
func TestRoamSourceBudget(t *testing.T) {
	l := natListener(t)
	nat := netip.MustParseAddr("127.0.0.2")
	for i := range 100 {
		roamPeer(t, l, netip.AddrPortFrom(nat, uint16(10000+i)), 1)
	}
	other, s := roamPeer(t, l, netip.MustParseAddrPort("127.0.0.5:7000"), 2)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range 2000 {
		l.handle(netip.AddrPortFrom(nat, uint16(30000+i)), junkData(rng), nil)
	}
	if n := l.Counters.RoamOpens.Load(); n > roamOpensPerSourcePerSecond+roamCandidates*10 {
		t.Errorf("%d trial opens for junk from one IP, its budget %d/s", n, roamOpensPerSourcePerSecond)
	}
	if l.Counters.RoamSourceLimit.Load() == 0 {
		t.Errorf("RoamSourceLimit not counted")
	}
	ip := make([]byte, 40)
	ip[0] = 0x45
	moved := netip.MustParseAddrPort("127.0.0.5:7001")
	l.handle(moved, sealFrom(t, s, cstp.TypeData, ip), nil)
	if other.Addr() != moved {
		t.Errorf("peer of another IP did not roam during the flood (RoamLimit %d)", l.Counters.RoamLimit.Load())
	}
}

// TestRoamingAcrossGroup: on an SO_REUSEPORT group of two sockets, a
// client whose NAT moves it to new ports (each of which the kernel may
// hash to the other socket: reuseport_select_sock) keeps its DTLS
// session: the peer table is shared by the readers, and the replies reach
// it at its new address.
func TestRoamingAcrossGroup(t *testing.T) {
	s := newTestServerGroup(t, false, 2)
	r := newRelay(t, s.addr)
	c, p := s.connectOwn(t, r.Addr())
	rng := rand.New(rand.NewPCG(12, 12))
	for i := range 8 {
		moved := r.Rebind()
		pkts := randomPackets(rng, 3)
		samePackets(t, fmt.Sprintf("up after rebinding %d", i), clientSend(t, s, c, pkts), pkts)
		if p.Addr() != moved {
			t.Fatalf("rebinding %d: peer at %v, want %v", i, p.Addr(), moved)
		}
		down := randomPackets(rng, 3)
		if err := p.WritePackets(withRoom(down), room); err != nil {
			t.Fatal(err)
		}
		samePackets(t, fmt.Sprintf("down after rebinding %d", i), clientRead(t, c, len(down)), down)
	}
	if n := s.l.Counters.Roamed.Load(); n != 8 {
		t.Errorf("Roamed = %d, want 8", n)
	}
}

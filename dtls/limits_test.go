package dtls

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/udp"
)

// TestHandshakesBehindOneNAT: 200 users behind one office NAT address
// (200 App-IDs, 200 source ports of one address) all get their handshake
// started; the per-session limit, not the address, bounds each of them.
func TestHandshakesBehindOneNAT(t *testing.T) {
	conn, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var finds atomic.Int64
	owner := &testOwner{}
	l := NewListener(ListenerConfig{Conn: conn, Sink: &tunRecorder{}, Log: quietLog(),
		Find: func(id []byte) (Match, bool) {
			finds.Add(1)
			return Match{Owner: owner, PSK: bytes.Repeat([]byte{1}, PSKLen)}, id[0] == 0xab
		}})
	done := make(chan struct{})
	go func() { l.Serve(); close(done) }()
	t.Cleanup(func() {
		conn.Close()
		<-done
		l.mu.RLock()
		var ps []*Peer
		for _, p := range l.byAddr {
			ps = append(ps, p)
		}
		l.mu.RUnlock()
		for _, p := range ps {
			p.Close()
		}
	})
	srv := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	const users = 200
	for i := range users {
		id := make([]byte, AppIDLen)
		id[0] = 0xab
		binary.BigEndian.PutUint32(id[1:], uint32(i))
		s := listenUDP(t, "127.0.0.2:0")
		defer s.Close()
		s.WriteToUDPAddrPort(clientHello(id), srv)
	}
	waitFor(t, "every ClientHello looked up", func() bool { return finds.Load() == users })
	if n := l.Counters.HandshakeLimit.Load(); n != 0 {
		t.Errorf("HandshakeLimit = %d for %d users behind one address, want 0", n, users)
	}

	// One of them floods with its own App-ID from many ports: limited.
	id := make([]byte, AppIDLen)
	id[0] = 0xab
	for range 50 {
		s := listenUDP(t, "127.0.0.3:0")
		defer s.Close()
		s.WriteToUDPAddrPort(clientHello(id), srv)
	}
	waitFor(t, "the flood looked up", func() bool { return finds.Load() == users+50 })
	if n := l.Counters.HandshakeLimit.Load(); n < 50-handshakesPerSecond-2 {
		t.Errorf("HandshakeLimit = %d after 50 ClientHellos of one App-ID", n)
	}
}

// junkData is an application-data record from nobody: it parses, so a
// roaming trial opens it with every candidate peer's keys.
func junkData(rng *rand.Rand) []byte {
	dg := make([]byte, 13+8+64+16)
	dg[0], dg[1], dg[2], dg[4] = 23, 0xfe, 0xfd, 1
	binary.BigEndian.PutUint32(dg[7:11], rng.Uint32()|1<<31)
	binary.BigEndian.PutUint16(dg[11:13], uint16(len(dg)-13))
	for i := 13; i < len(dg); i++ {
		dg[i] = byte(rng.Uint32())
	}
	return dg
}

// TestRoamFloodBudget: junk application data from 20000 spoofed sources
// costs at most the global trial budget of AEAD opens, while established
// peers keep working, a peer with connection IDs roams during the flood,
// and a peer without roams by trial once the flood stops.
func TestRoamFloodBudget(t *testing.T) {
	s := newTestServer(t, false)
	r1 := newRelay(t, s.addr)
	c1, p1 := s.connectOwn(t, r1.Addr())
	r2 := newRelay(t, s.addr)
	c2, p2 := s.connectOwn(t, r2.Addr())
	s.cid.Store(true)
	r3 := newRelay(t, s.addr)
	c3, p3 := s.connectOwn(t, r3.Addr())
	s.cid.Store(false)
	rng := rand.New(rand.NewPCG(50, 50))
	pkts := randomPackets(rng, 4)

	// The flood runs until the checks during it are done (at least
	// 20000 sources).
	const minSources = 20000
	var sent atomic.Int64
	start := time.Now()
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		var out [][]byte
		for i := 0; ; i++ {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i))
			out = s.l.handle(src, junkData(rng), out[:0])
			sent.Add(1)
			if i >= minSources {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	waitFor(t, "the flood to start", func() bool { return sent.Load() > 1000 })
	samePackets(t, "established peer during the flood", clientSend(t, s, c1, pkts), pkts)
	moved := r3.Rebind()
	samePackets(t, "CID peer roaming during the flood", clientSend(t, s, c3, pkts), pkts)
	if p3.Addr() != moved {
		t.Errorf("CID peer at %v, want %v", p3.Addr(), moved)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	<-flooded
	elapsed := time.Since(start)
	opens := s.l.Counters.RoamOpens.Load()
	budget := uint64(roamOpensPerSecond*(1+elapsed.Seconds())) + 1
	t.Logf("%d junk datagrams from as many sources in %v: %d trial opens (budget %d), RoamLimit %d",
		sent.Load(), elapsed, opens, budget, s.l.Counters.RoamLimit.Load())
	if opens > budget {
		t.Errorf("%d trial opens for junk from %d sources, budget %d", opens, sent.Load(), budget)
	}
	if s.l.Counters.RoamLimit.Load() == 0 {
		t.Errorf("RoamLimit not counted")
	}

	// The flood is over: the budget refills and a NAT rebinding of a
	// peer without CIDs is found by trial.
	time.Sleep(time.Second)
	moved = r2.Rebind()
	samePackets(t, "peer roaming after the flood", clientSend(t, s, c2, pkts), pkts)
	if p2.Addr() != moved {
		t.Errorf("peer at %v, want %v", p2.Addr(), moved)
	}
	if !p1.Up() || p1.Addr() != r1.UpAddr() {
		t.Errorf("established peer moved or closed")
	}
}

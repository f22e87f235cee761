package dtls

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRoaming: after a NAT rebinding the first authenticated record from
// the new port moves the peer there; unauthenticated datagrams and
// replays from other ports do not.
func TestRoaming(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	rng := rand.New(rand.NewPCG(8, 8))
	orig := r.UpAddr()

	pkts := randomPackets(rng, 3)
	samePackets(t, "before", clientSend(t, s, c, pkts), pkts)
	recs := r.captured(true, 23)
	old := recs[len(recs)-1]

	// A stranger: a forged data record, and a replay of a genuine one.
	stranger := listenUDP(t, "127.0.0.1:0")
	defer stranger.Close()
	forged := bytes.Clone(old)
	forged[len(forged)-1] ^= 0x80
	stranger.WriteToUDPAddrPort(forged, s.addr)
	stranger.WriteToUDPAddrPort(old, s.addr)
	waitFor(t, "NoSession for the stranger", func() bool { return s.l.Counters.NoSession.Load() == 2 })
	if p.Addr() != orig || s.l.Counters.Roamed.Load() != 0 {
		t.Fatalf("peer moved to %v by an unauthenticated datagram", p.Addr())
	}
	if n := s.tun.count(); n != 0 {
		t.Fatalf("%d packets delivered from the stranger", n)
	}

	// The NAT moves the client to a new port.
	moved := r.Rebind()
	pkts = randomPackets(rng, 5)
	samePackets(t, "after rebinding", clientSend(t, s, c, pkts), pkts)
	if got := s.l.Counters.Roamed.Load(); got != 1 {
		t.Errorf("Roamed = %d, want 1", got)
	}
	if p.Addr() != moved {
		t.Errorf("peer at %v, want %v", p.Addr(), moved)
	}
	if n := s.peerCount(); n != 1 {
		t.Errorf("%d routed addresses, want 1", n)
	}
	if got := s.owner.ups(); got != 1 {
		t.Errorf("PeerUp %d times", got)
	}
	// Downstream follows.
	pkts = randomPackets(rng, 5)
	if err := p.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatal(err)
	}
	samePackets(t, "downstream after rebinding", clientRead(t, c, len(pkts)), pkts)

	// The stranger still cannot take it.
	stranger.WriteToUDPAddrPort(forged, s.addr)
	waitFor(t, "NoSession", func() bool { return s.l.Counters.NoSession.Load() == 3 })
	if p.Addr() != moved {
		t.Fatalf("peer moved to %v", p.Addr())
	}
}

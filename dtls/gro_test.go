package dtls

import (
	"math/rand/v2"
	"testing"
)

// TestGROBothWays sends runs of equal-size packets, which leave as UDP GSO
// sends and arrive coalesced by UDP GRO on loopback, both ways, and checks
// that every packet arrives once, intact and in order, and that the
// coalesced receive paths (server spill buffers, client reader) ran.
func TestGROBothWays(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	if c.gro == nil || !s.l.cfg.Conn.GRO() {
		t.Skip("UDP GRO unavailable (KVPN_UDP_NO_GRO=1 or an old kernel)")
	}
	rng := rand.New(rand.NewPCG(7, 7))
	equal := func(n, size int) [][]byte {
		pkts := make([][]byte, n)
		for i := range pkts {
			pkts[i] = ipv4Packet(rng, size)
		}
		return pkts
	}
	// 64 is the most one GSO send carries; 200 spans several, and runs of
	// 1400 bytes coalesce into more datagrams than one client read takes.
	for _, n := range []int{2, 64, 200} {
		pkts := equal(n, 1400)
		samePackets(t, "client to server", clientSend(t, s, c, pkts), pkts)
	}
	for _, n := range []int{2, 64, 200} {
		pkts := equal(n, 1400)
		for i := 0; i < len(pkts); i += 64 {
			batch := pkts[i:min(i+64, len(pkts))]
			if err := p.WritePackets(withRoom(batch), room); err != nil {
				t.Fatal(err)
			}
		}
		samePackets(t, "server to client", clientRead(t, c, n), pkts)
	}
	if got := s.l.Counters.Coalesced.Load(); got == 0 {
		t.Error("server: no datagram arrived coalesced")
	}
	if got := c.Stats().Coalesced.Load(); got == 0 {
		t.Error("client: no datagram arrived coalesced")
	}
	if bad := s.l.Counters.BadRecords.Load() + c.Stats().BadRecords.Load(); bad != 0 {
		t.Errorf("%d bad records", bad)
	}
}

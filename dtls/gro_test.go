package dtls

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"kvpn/internal/testenv"

	"kvpn/udp"
)

// TestGROBothWays sends runs of equal-size packets, which leave as UDP GSO
// sends and arrive coalesced by UDP GRO on loopback, both ways, and checks
// that every packet arrives once, intact and in order, and that the
// coalesced receive paths (server spill buffers, client reader) ran.
func TestGROBothWays(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	if c.gro == nil || !s.l.cfg.Conn.GRO() {
		testenv.Unavailable(t, "UDP GRO (KVPN_UDP_NO_GRO=1 or an old kernel)", nil)
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

// TestConcurrentPeerWrites: the sessions of a server send at once on the
// one UDP socket (each from its own goroutine); every client gets all of
// its own packets intact. Under -race this also checks that the peers'
// send paths share no state.
func TestConcurrentPeerWrites(t *testing.T) { pumpSessions(t, 1, 2) }

// TestSocketGroup: a listener reading an SO_REUSEPORT group of sockets
// with one goroutine each carries several sessions both ways at once.
func TestSocketGroup(t *testing.T) { pumpSessions(t, 2, 6) }

// pumpSessions runs nsess DTLS sessions through a listener on a group of
// sockets, sending packets both ways in all sessions at once.
func pumpSessions(t *testing.T, group, nsess int) {
	conns, err := udp.ListenGroup("127.0.0.1:0", group)
	if err != nil {
		t.Fatal(err)
	}
	type sess struct {
		appID, psk []byte
		owner      *testOwner
	}
	sessions := make([]sess, nsess)
	for k := range sessions {
		sessions[k] = sess{randBytes(AppIDLen), randBytes(PSKLen), &testOwner{}}
	}
	tun := &tunRecorder{}
	l := NewListener(ListenerConfig{Conn: conns[0], Readers: conns[1:], Sink: tun, Log: quietLog(), Find: func(appID []byte) (Match, bool) {
		for _, s := range sessions {
			if bytes.Equal(appID, s.appID) {
				return Match{Owner: s.owner, PSK: s.psk}, true
			}
		}
		return Match{}, false
	}})
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		<-done
		tun.check(t)
	}()
	addr := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	clients := make([]*ClientChannel, nsess)
	peers := make([]*Peer, nsess)
	for k, s := range sessions {
		c, err := Dial(context.Background(), ClientConfig{Server: addr, AppID: s.appID, PSK: s.psk, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[k] = c
		waitFor(t, "PeerUp", func() bool { return s.owner.ups() == 1 })
		peers[k] = s.owner.last()
		defer peers[k].Close()
	}
	rng := rand.New(rand.NewPCG(9, uint64(group)))
	const rounds, per = 8, 32
	down := make([][][]byte, nsess)
	up := make([][][]byte, nsess)
	for k := range nsess {
		for range rounds * per {
			down[k] = append(down[k], ipv4Packet(rng, 1000+k*10))
			up[k] = append(up[k], ipv4Packet(rng, 900+k*10))
		}
	}
	errc := make(chan error, 2*nsess)
	// send writes pkts in batches of per with write, from a goroutine.
	send := func(write func([][]byte, int) error, pkts [][]byte) {
		go func() {
			for r := range rounds {
				if err := write(withRoom(pkts[r*per:(r+1)*per]), room); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for k := range nsess {
		send(peers[k].WritePackets, down[k])
		send(clients[k].WritePackets, up[k])
	}
	got := make([][][]byte, nsess)
	var wg sync.WaitGroup
	for k := range nsess {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[k] = clientRead(t, clients[k], rounds*per)
		}()
	}
	wg.Wait()
	for range 2 * nsess {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for k := range nsess {
		samePackets(t, fmt.Sprintf("to client %d", k), got[k], down[k])
	}
	waitFor(t, "upstream packets at the TUN", func() bool { return tun.count() >= nsess*rounds*per })
	// Each session's upstream packets (sized 900+10k) arrive whole and in
	// its own order: one socket of the group reads them all.
	all := tun.packets()
	for k := range nsess {
		var mine [][]byte
		for _, p := range all {
			if len(p) == 900+k*10 {
				mine = append(mine, p)
			}
		}
		samePackets(t, fmt.Sprintf("from client %d", k), mine, up[k])
	}
	if n := l.Counters.BadRecords.Load(); n != 0 {
		t.Errorf("%d bad records", n)
	}
}

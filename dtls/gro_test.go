package dtls

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"testing"
	"time"

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

// TestConcurrentPeerWrites: the sessions of a server send at once on the
// one UDP socket (each from its own goroutine); every client gets all of
// its own packets intact. Under -race this also checks that the peers'
// send paths share no state.
func TestConcurrentPeerWrites(t *testing.T) {
	conn, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type sess struct {
		appID, psk []byte
		owner      *testOwner
	}
	sessions := []sess{{randBytes(AppIDLen), randBytes(PSKLen), &testOwner{}}, {randBytes(AppIDLen), randBytes(PSKLen), &testOwner{}}}
	l := NewListener(ListenerConfig{Conn: conn, TUN: &tunRecorder{}, Log: quietLog(), Find: func(appID []byte) (Match, bool) {
		for _, s := range sessions {
			if bytes.Equal(appID, s.appID) {
				return Match{Owner: s.owner, PSK: s.psk}, true
			}
		}
		return Match{}, false
	}})
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	defer func() { conn.Close(); <-done }()
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	var clients [2]*ClientChannel
	var peers [2]*Peer
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
	rng := rand.New(rand.NewPCG(9, 9))
	const rounds, per = 8, 32
	var want [2][][]byte
	for k := range want {
		for range rounds * per {
			want[k] = append(want[k], ipv4Packet(rng, 1000+k*100))
		}
	}
	errc := make(chan error, 2)
	for k, p := range peers {
		go func() {
			for r := range rounds {
				if err := p.WritePackets(withRoom(want[k][r*per:(r+1)*per]), room); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	var got [2][][]byte
	read := make(chan struct{})
	go func() {
		defer close(read)
		got[1] = clientRead(t, clients[1], rounds*per)
	}()
	got[0] = clientRead(t, clients[0], rounds*per)
	<-read
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	samePackets(t, "client 1", got[0], want[0])
	samePackets(t, "client 2", got[1], want[1])
}

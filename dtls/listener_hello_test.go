package dtls

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// realClientHello captures the first ClientHello a client sends for the
// server's App-ID.
func realClientHello(t *testing.T, s *testServer) []byte {
	t.Helper()
	sniff := listenUDP(t, "127.0.0.1:0")
	defer sniff.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := Dial(ctx, ClientConfig{Server: sniff.LocalAddr().(*net.UDPAddr).AddrPort(), AppID: s.appID, PSK: s.psk, Timeout: 5 * time.Second})
		if err == nil {
			c.Close()
		}
	}()
	sniff.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := sniff.Read(buf)
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	hello := bytes.Clone(buf[:n])
	if id, err := ClientHelloAppID(hello); err != nil || !bytes.Equal(id, s.appID) {
		t.Fatalf("captured %d bytes, not a ClientHello for the App-ID: %v", n, err)
	}
	return hello
}

// TestHandshakeFlood: a flood of valid-looking ClientHellos from one host
// starts only a handful of handshakes (the rest are counted in
// HandshakeLimit), the goroutine count stays bounded, and a client on
// another host still connects.
func TestHandshakeFlood(t *testing.T) {
	s := newTestServer(t, false)
	hello := realClientHello(t, s)
	base := runtime.NumGoroutine()

	// One source port: everything after the first hello goes to the same
	// pending handshake.
	one := listenUDP(t, "127.0.0.2:0")
	defer one.Close()
	for range 200 {
		one.WriteToUDPAddrPort(hello, s.addr)
	}
	// Many source ports on the same host.
	const ports = 100
	socks := make([]*net.UDPConn, ports)
	for i := range socks {
		socks[i] = listenUDP(t, "127.0.0.2:0")
		defer socks[i].Close()
		socks[i].WriteToUDPAddrPort(hello, s.addr)
	}
	waitFor(t, "HandshakeLimit", func() bool {
		return s.l.Counters.HandshakeLimit.Load()+uint64(s.peerCount()) >= ports+1-handshakesPerSecond
	})
	started := s.finds.Load() - int64(s.l.Counters.HandshakeLimit.Load())
	t.Logf("finds %d, HandshakeLimit %d, peers %d, goroutines %d -> %d",
		s.finds.Load(), s.l.Counters.HandshakeLimit.Load(), s.peerCount(), base, runtime.NumGoroutine())
	if s.l.Counters.HandshakeLimit.Load() == 0 {
		t.Error("HandshakeLimit not counted")
	}
	// 5 tokens, plus one per 200 ms the flood took.
	if started > handshakesPerSecond+2 {
		t.Errorf("%d handshakes started from one host", started)
	}
	if n := s.peerCount(); n > handshakesPerSecond+2 {
		t.Errorf("%d pending peers", n)
	}
	if g := runtime.NumGoroutine(); g > base+10*(handshakesPerSecond+2) {
		t.Errorf("goroutines %d -> %d", base, g)
	}

	// A client from 127.0.0.1 is not affected.
	c, p := s.connect(t, s.addr)
	pkts := randomPackets(rand.New(rand.NewPCG(7, 7)), 4)
	samePackets(t, "after the flood", clientSend(t, s, c, pkts), pkts)
	if p.Addr().Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("peer at %v", p.Addr())
	}

	// Closing the pending peers ends their handshakes.
	c.Close()
	s.closePeers()
	if g := goroutinesSettle(base, 5*time.Second); g > base {
		t.Errorf("goroutines did not settle after closing the peers: %d -> %d", base, g)
	}
}

// TestClientHelloRestartsDTLS: a new ClientHello from an established
// peer's address (the client restarted DTLS) replaces the peer.
func TestClientHelloRestartsDTLS(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c1, p1 := s.connect(t, r.Addr())
	c1.Close()
	c2, p2 := s.connect(t, r.Addr()) // same relay port towards the server
	if p1 == p2 || p1.Up() || !p2.Up() {
		t.Fatalf("old peer up %v, new peer up %v", p1.Up(), p2.Up())
	}
	if p2.Addr() != r.UpAddr() {
		t.Errorf("new peer at %v", p2.Addr())
	}
	pkts := randomPackets(rand.New(rand.NewPCG(9, 9)), 4)
	samePackets(t, "new channel", clientSend(t, s, c2, pkts), pkts)
	if err := p1.WritePackets(withRoom(pkts), room); !errors.Is(err, net.ErrClosed) {
		t.Errorf("old peer WritePackets: %v, want net.ErrClosed", err)
	}
}

package server

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/record/recordtest"
	"kvpn/session"
	"kvpn/tun"
	"kvpn/tun/tuntest"
)

// TestStalledReaderEndsSession: a client that completes CONNECT and then
// never reads, while the server has packets for it, is cut off by the
// tunnel write timeout: its session ends (address freed), with a counter.
func TestStalledReaderEndsSession(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	dev, kernel := tuntest.NewPair()
	s.dev = dev
	s.batches.New = func() any { return newBatch(s.cfg.MTU) }
	const bound = 500 * time.Millisecond
	s.writeTimeout = bound
	go s.routeFromTUN()
	defer dev.Close()

	client, server := recordtest.Pair(t, 0) // the client side never reads
	_ = client
	sess, cookie := login(t, s, "alice")
	req, err := http.NewRequest(http.MethodConnect, "https://vpn.example"+cstp.TunnelPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: "webvpn", Value: cookie})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.handleConnect(ctx, server, session.NewFrameReader(server), req, s.log, func() {})
	}()
	var addr netip.Addr
	for deadline := time.Now().Add(5 * time.Second); !addr.IsValid(); {
		if time.Now().After(deadline) {
			t.Fatal("no address assigned")
		}
		sess.mu.Lock()
		if sess.ch != nil {
			addr = sess.addr
		}
		sess.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	pkt := append(make([]byte, tun.Headroom), ipv4Packet("10.77.0.1", addr.String())...)
	pkt = append(pkt, make([]byte, 1200)...)
	pkt[tun.Headroom+2], pkt[tun.Headroom+3] = byte((len(pkt)-tun.Headroom)>>8), byte(len(pkt)-tun.Headroom)
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = pkt
	}
	start := time.Now()
	for !sessEnded(sess) {
		if time.Since(start) > 30*time.Second {
			t.Fatal("the session of a client that never reads is still up after 30 s")
		}
		kernel.Write(bufs, tun.Headroom)
		time.Sleep(time.Millisecond)
	}
	t.Logf("session ended %s after the packets started", time.Since(start).Round(time.Millisecond))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handleConnect did not return")
	}
	s.mu.RLock()
	holder := s.byAddr[addr]
	s.mu.RUnlock()
	if holder != nil {
		t.Fatalf("address %s still held", addr)
	}
	if a, err := s.pool.Get(addr); err != nil || a != addr {
		t.Fatalf("address %s not back in the pool: got %s, %v", addr, a, err)
	}
	if n := s.Snapshot().Drops["write-stalled"]; n != 1 {
		t.Fatalf("write-stalled counter %d", n)
	}
}

func sessEnded(sess *Session) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.ended
}

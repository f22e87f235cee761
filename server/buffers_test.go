package server

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/record"
	"kvpn/record/recordtest"
	"kvpn/session"
	"kvpn/tun"
	"kvpn/tun/tuntest"
)

// connectForTest runs handleConnect for a new session of alice over a
// loopback record pair and waits until the tunnel is up. It returns the
// session, its address, the client's side and a channel closed when
// handleConnect returns.
func connectForTest(t *testing.T, s *Server) (*Session, netip.Addr, record.Conn, chan struct{}) {
	t.Helper()
	client, server := recordtest.Pair(t, 0)
	sess, cookie := login(t, s, "alice")
	req, err := http.NewRequest(http.MethodConnect, "https://vpn.example"+cstp.TunnelPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: "webvpn", Value: cookie})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.handleConnect(ctx, server, session.NewFrameReader(server), req, s.log, func() {})
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no tunnel")
		}
		sess.mu.Lock()
		addr, up := sess.addr, sess.ch != nil
		sess.mu.Unlock()
		if up {
			return sess, addr, client, done
		}
	}
}

// packetsTo returns n TUN-read buffers of a 1200-byte IPv4 packet to dst.
func packetsTo(dst netip.Addr, n int) [][]byte {
	pkt := append(make([]byte, tun.Headroom), ipv4Packet("10.77.0.1", dst.String())...)
	pkt = append(pkt, make([]byte, 1200)...)
	pkt[tun.Headroom+2], pkt[tun.Headroom+3] = byte((len(pkt)-tun.Headroom)>>8), byte(len(pkt)-tun.Headroom)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = pkt
	}
	return bufs
}

// waitBatches waits until every downlink batch is back in the pool.
func waitBatches(t *testing.T, s *Server, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.batchesOut.Load() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d downlink batches (%d KiB each) not back in the pool", what, s.batchesOut.Load(),
				batchSize*(tun.Headroom+s.cfg.MTU)/1024)
		}
	}
}

// TestStalledReaderReturnsBatches: the batches queued for a client that
// stopped reading, and the ones its blocked write held, go back to the
// pool when the write timeout ends the session: bounded (downlinkQueue +
// maxGather batches) for at most the timeout, not held for good.
func TestStalledReaderReturnsBatches(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	dev, kernel := tuntest.NewPair()
	s.dev = dev
	s.batches.New = func() any { return newBatch(s.cfg.MTU) }
	s.writeTimeout = 300 * time.Millisecond
	go s.routeFromTUN()
	defer dev.Close()
	sess, addr, _, done := connectForTest(t, s) // the client never reads
	bufs := packetsTo(addr, 32)
	start := time.Now()
	maxOut := int64(0)
	for !sessEnded(sess) {
		if time.Since(start) > 30*time.Second {
			t.Fatal("session still up")
		}
		kernel.Write(bufs, tun.Headroom)
		maxOut = max(maxOut, s.batchesOut.Load())
		time.Sleep(time.Millisecond)
	}
	<-done
	t.Logf("at most %d batches out while the write was blocked", maxOut)
	if limit := int64(downlinkQueue + maxGather + 2); maxOut > limit {
		t.Errorf("%d batches out at once, bound %d", maxOut, limit)
	}
	waitBatches(t, s, "after the stalled session ended")
}

// TestDetachedSessionHoldsNoBatches: packets for a session whose
// connection is gone (kept for a reconnect) are dropped and counted, not
// queued: such a session held up to downlinkQueue batches until
// cookie-timeout.
func TestDetachedSessionHoldsNoBatches(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	dev, kernel := tuntest.NewPair()
	s.dev = dev
	s.batches.New = func() any { return newBatch(s.cfg.MTU) }
	go s.routeFromTUN()
	defer dev.Close()
	sess, addr, client, done := connectForTest(t, s)
	client.Close() // connection lost: the session stays for its reconnect
	<-done
	if sessEnded(sess) {
		t.Fatal("session ended on a lost connection")
	}
	before := s.Snapshot().Drops["detached"]
	for range 20 {
		kernel.Write(packetsTo(addr, 32), tun.Headroom)
	}
	for deadline := time.Now().Add(5 * time.Second); s.Snapshot().Drops["detached"]-before < 20*32; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("detached drops %d, want %d; %d batches queued", s.Snapshot().Drops["detached"]-before, 20*32, len(sess.queue))
		}
	}
	if n := len(sess.queue); n != 0 {
		t.Fatalf("%d batches queued for a session without a connection", n)
	}
	waitBatches(t, s, "detached session")
}

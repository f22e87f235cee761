package server

import (
	"bufio"
	"context"
	"kvpn/record"
	"net"
	"net/netip"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/cstp/cstptest"
	"kvpn/dtls"
)

// TestKeepAliveDropsDeadDTLS: one goroutine watches a session's TLS
// channel and its DTLS peer. A DTLS peer that goes silent is dropped after
// 2 x DPD and downstream traffic moves to TLS, while the TLS channel,
// which the client keeps alive, stays up with its session.
func TestKeepAliveDropsDeadDTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	cfg.IPv4Network = "10.97.0.0/24"
	cfg.DPD, cfg.Keepalive = 1, 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, ln := serveMem(t, cfg)
	sess, conn, p := memSession(t, s, ln)
	psk, err := dtls.PSK(conn.ConnectionState())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dtls.Dial(context.Background(), dtls.ClientConfig{Server: netip.MustParseAddrPort(s.udp.LocalAddr().String()),
		AppID: p.DTLSAppID, PSK: psk, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close() // never read: the client's DTLS side goes silent
	// The TLS side stays alive: a keepalive frame every 200 ms.
	kctx, kstop := context.WithCancel(context.Background())
	defer kstop()
	go func() {
		frame := cstp.AppendFrame(nil, cstp.TypeKeepalive, nil)
		for kctx.Err() == nil {
			if _, err := conn.Write(frame); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	waitUntil(t, 5*time.Second, "DTLS peer up", func() bool {
		peer := sess.peer.Load()
		return peer != nil && peer.Up() && sess.preferDTLS.Load()
	})
	up := time.Now()
	waitUntil(t, 6*time.Second, "silent DTLS peer dropped", func() bool { return sess.peer.Load() == nil })
	t.Logf("DTLS peer dropped %s after it came up (DPD 1 s)", time.Since(up).Round(10*time.Millisecond))
	if sess.preferDTLS.Load() {
		t.Error("downstream traffic still prefers DTLS")
	}
	sess.mu.Lock()
	tlsUp, ended := sess.ch != nil, sess.ended
	sess.mu.Unlock()
	if !tlsUp || ended {
		t.Fatalf("TLS channel up %v, session ended %v: only DTLS should have gone", tlsUp, ended)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
	}
}

// TestServerSendsDPDNotKeepalives: vpnd sends no keepalives of its own
// (the client is told the interval and keeps its channels alive, as with
// ocserv); a channel that goes silent for DPD gets a DPD request.
func TestServerSendsDPDNotKeepalives(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	cfg.IPv4Network = "10.98.0.0/24"
	cfg.DPD, cfg.Keepalive = 1, 1
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, ln := serveMem(t, cfg)
	_, conn, _ := memSession(t, s, ln)
	frames := make(chan cstp.FrameType, 64)
	go func() {
		defer close(frames)
		br := bufio.NewReaderSize(conn, cstp.MaxPayload+16)
		for {
			typ, _, err := cstptest.ReadFrame(br)
			if err != nil {
				t.Log("reading frames:", err)
				return
			}
			frames <- typ
		}
	}()
	// The client keeps the channel busy for 2.5 s (3 keepalive intervals).
	keepalive := cstp.AppendFrame(nil, cstp.TypeKeepalive, nil)
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if _, err := conn.Write(keepalive); err != nil {
			t.Fatal(err)
		}
	}
	for len(frames) > 0 {
		if typ := <-frames; typ == cstp.TypeKeepalive || typ == cstp.TypeDPDReq {
			t.Fatalf("vpnd sent frame type %d to a client that kept its channel alive", typ)
		}
	}
	// Now silent: a DPD request comes after DPD (1 s).
	select {
	case typ := <-frames:
		if typ != cstp.TypeDPDReq {
			t.Fatalf("first frame to a silent client: type %d, want a DPD request", typ)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DPD request to a silent client")
	}
}

// memSession logs alice in on the in-process server (a session and its
// cookie) and connects with it; the connection closes when t ends.
func memSession(t *testing.T, s *Server, ln net.Listener) (*Session, record.Conn, *cstp.TunnelParams) {
	t.Helper()
	sess := s.newSession("alice", netip.Addr{})
	c, err := s.cookies.Issue(sess, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sess.cookie = c
	cookie, err := s.sealTicket(sess)
	if err != nil {
		t.Fatal(err)
	}
	conn, p, err := memConnect(ln.Addr().String(), cookie)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return sess, conn, p
}

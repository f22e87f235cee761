package server

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/cstp/cstptest"
	"kvpn/dtls"
	"kvpn/record"
	"kvpn/record/recordtest"
	"kvpn/session"
	"kvpn/tun"
	"kvpn/tun/tuntest"
)

// connectUser is connectForTest for a session of user.
func connectUser(t *testing.T, s *Server, user string) (*Session, netip.Addr, record.Conn, chan struct{}) {
	t.Helper()
	client, server := recordtest.Pair(t, 0)
	sess, cookie := login(t, s, user)
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
	waitUntil(t, 5*time.Second, user+"'s tunnel up", func() bool {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return sess.ch != nil
	})
	return sess, sess.addr, client, done
}

// tunnelClient is the client's end of a test tunnel: it reads the frames
// the server sends (after the CONNECT answer) and keeps the data packets.
type tunnelClient struct {
	conn record.Conn
	data chan []byte
}

func newTunnelClient(t *testing.T, conn record.Conn) *tunnelClient {
	c := &tunnelClient{conn: conn, data: make(chan []byte, 1024)}
	go func() {
		br := bufio.NewReaderSize(conn, cstp.MaxPayload+16)
		resp, err := cstp.ReadResponse(br, http.MethodConnect)
		if err != nil {
			return
		}
		resp.Body.Close()
		for {
			typ, payload, err := cstptest.ReadFrame(br)
			if err != nil {
				close(c.data)
				return
			}
			if typ == cstp.TypeData {
				select {
				case c.data <- append([]byte(nil), payload...):
				default:
				}
			}
		}
	}()
	return c
}

// send sends one IPv4 packet from src to dst over the tunnel.
func (c *tunnelClient) send(t *testing.T, src, dst netip.Addr) {
	t.Helper()
	if _, err := c.conn.Write(cstp.AppendFrame(nil, cstp.TypeData, ipv4Packet(src.String(), dst.String()))); err != nil {
		t.Fatal(err)
	}
}

// passes checks that packets still flow both ways through the session at
// addr whose client is c: from the TUN device to the client and back.
func passes(t *testing.T, kernel *tuntest.Device, c *tunnelClient, addr netip.Addr) {
	t.Helper()
	gw := netip.MustParseAddr("10.77.0.1")
	got := false
	for deadline := time.Now().Add(5 * time.Second); !got; {
		if time.Now().After(deadline) {
			t.Fatalf("no packet from the TUN device reached the client of %s", addr)
		}
		kernel.Write(packetsTo(addr, 1), tun.Headroom)
		select {
		case p, ok := <-c.data:
			if !ok {
				t.Fatalf("connection of %s closed", addr)
			}
			got = len(p) > 0
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.send(t, addr, gw)
	bufs, sizes := tun.NewBuffers(kernel.BatchSize()), make([]int, kernel.BatchSize())
	readc := make(chan netip.Addr, 1)
	go func() {
		for {
			n, err := kernel.Read(bufs, sizes, tun.Headroom)
			if err != nil {
				return
			}
			for i := range n {
				p := bufs[i][tun.Headroom : tun.Headroom+sizes[i]]
				if src, ok := netip.AddrFromSlice(p[12:16]); ok && src == addr {
					readc <- src
					return
				}
			}
		}
	}()
	select {
	case <-readc:
	case <-time.After(5 * time.Second):
		t.Fatalf("no packet from the client of %s reached the TUN device", addr)
	}
}

// TestSessionPanicEndsOnlyThatSession: a panic in one of a session's
// goroutines (the sender, the uplink, the liveness watch) ends that
// session, is counted, and leaves the server and other sessions running.
func TestSessionPanicEndsOnlyThatSession(t *testing.T) {
	for _, where := range []string{"sender", "uplink", "liveness"} {
		t.Run(where, func(t *testing.T) {
			s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
			dev, kernel := tuntest.NewPair()
			s.dev = dev
			s.batches.New = func() any { return newBatch(s.cfg.MTU) }
			trigger := make(chan struct{})
			var closeTrigger sync.Once
			t.Cleanup(func() { closeTrigger.Do(func() { close(trigger) }) })
			s.testPanic = func(w string, sess *Session) {
				if w != where || sess == nil || sess.user != "alice" {
					return
				}
				if w == "liveness" {
					<-trigger // from the test, not at once
				}
				panic("injected fault in alice's " + w)
			}
			go s.routeFromTUN()
			defer dev.Close()

			alice, aliceAddr, aliceConn, aliceDone := connectUser(t, s, "alice")
			bob, bobAddr, bobConn, _ := connectUser(t, s, "bob")
			ac := newTunnelClient(t, aliceConn)
			bc := newTunnelClient(t, bobConn)
			passes(t, kernel, bc, bobAddr)

			switch where {
			case "sender":
				kernel.Write(packetsTo(aliceAddr, 4), tun.Headroom)
			case "uplink":
				ac.send(t, aliceAddr, netip.MustParseAddr("10.77.0.1"))
			case "liveness":
				closeTrigger.Do(func() { close(trigger) })
			}
			waitUntil(t, 5*time.Second, "alice's session ended", func() bool { return sessEnded(alice) })
			select {
			case <-aliceDone:
			case <-time.After(5 * time.Second):
				t.Fatal("alice's connection handler did not return")
			}
			if n := s.Snapshot().Panics["session"]; n != 1 {
				t.Fatalf("session panics counted: %d, want 1", n)
			}
			if sessEnded(bob) {
				t.Fatal("bob's session ended too")
			}
			passes(t, kernel, bc, bobAddr)
			waitBatches(t, s, "after the panic")
		})
	}
}

// TestTUNReaderPanicRestarts: a panic in the shared TUN reader is
// recovered and counted, the session table is not left locked, and the
// reader starts again: packets reach the sessions after it.
func TestTUNReaderPanicRestarts(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	dev, kernel := tuntest.NewPair()
	s.dev = dev
	s.batches.New = func() any { return newBatch(s.cfg.MTU) }
	var calls atomic.Int32
	s.testPanic = func(w string, _ *Session) {
		if w == "tun-reader" && calls.Add(1) == 1 {
			panic("injected fault in the TUN reader")
		}
	}
	_, bobAddr, bobConn, _ := connectUser(t, s, "bob")
	bc := newTunnelClient(t, bobConn)
	go s.routeFromTUN()
	defer dev.Close()
	kernel.Write(packetsTo(bobAddr, 1), tun.Headroom)
	waitUntil(t, 5*time.Second, "a panic", func() bool { return s.Snapshot().Panics["tun-reader"] == 1 })
	// The session table must not be left locked by the panicked reader.
	locked := make(chan struct{})
	go func() {
		s.mu.Lock()
		s.mu.Unlock()
		close(locked)
	}()
	select {
	case <-locked:
	case <-time.After(5 * time.Second):
		t.Fatal("the session table stays locked after a panic in the TUN reader")
	}
	passes(t, kernel, bc, bobAddr)
	if n := s.Snapshot().Panics["tun-reader"]; n != 1 {
		t.Fatalf("tun-reader panics %d, want 1", n)
	}
}

// failingTUN fails every read (until closed) and counts them.
type failingTUN struct {
	reads  atomic.Int64
	closed atomic.Bool
}

var errTUNBroken = errors.New("tun read: input/output error")

func (d *failingTUN) Read([][]byte, []int, int) (int, error) {
	if d.closed.Load() {
		return 0, os.ErrClosed
	}
	d.reads.Add(1)
	return 0, errTUNBroken
}
func (d *failingTUN) Write(bufs [][]byte, _ int) (int, error) {
	return 0, errors.New("tun write: refused")
}
func (d *failingTUN) BatchSize() int { return 8 }
func (d *failingTUN) Name() string   { return "failing0" }
func (d *failingTUN) MTU() int       { return 1400 }
func (d *failingTUN) Close() error   { d.closed.Store(true); return nil }

// TestTUNReadErrorsBackOff: a TUN device whose every read fails does not
// turn the TUN reader into a spin: its reads are paced by a backoff
// (a spin makes well over 10,000 in 200 ms), and each is counted.
func TestTUNReadErrorsBackOff(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	dev := &failingTUN{}
	s.dev = dev
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.routeFromTUN()
	}()
	time.Sleep(200 * time.Millisecond)
	reads := dev.reads.Load()
	dev.Close()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the TUN reader did not return after the device closed")
	}
	t.Logf("%d failed reads in 200 ms", reads)
	if reads == 0 || reads >= 20 {
		t.Fatalf("%d failed reads in 200 ms: want a few (backoff from 1 ms), not 0 and not a spin", reads)
	}
	if n := s.Snapshot().ReadErrors["tun"]; n != uint64(dev.reads.Load()) {
		t.Fatalf("read errors counted %d, reads failed %d", n, dev.reads.Load())
	}
}

// refusingTUN is a tuntest device whose writes fail, like a kernel
// refusing packets.
type refusingTUN struct{ *tuntest.Device }

func (refusingTUN) Write(bufs [][]byte, _ int) (int, error) {
	return 0, errors.New("tun write: refused")
}

// TestTUNWriteFailureCounted: packets from a client that the TUN write
// fails on are counted (drop reason tun-write); the session goes on.
func TestTUNWriteFailureCounted(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	dev, _ := tuntest.NewPair()
	s.dev = refusingTUN{dev}
	defer dev.Close()
	sess, addr, conn, _ := connectUser(t, s, "bob")
	c := newTunnelClient(t, conn)
	for range 3 {
		c.send(t, addr, netip.MustParseAddr("10.77.0.1"))
	}
	waitUntil(t, 5*time.Second, "3 tun-write drops", func() bool { return s.Snapshot().Drops["tun-write"] == 3 })
	if sessEnded(sess) {
		t.Fatal("a failed TUN write ended the session")
	}
}

// capturingChannel records the packets written to it (the TLS side of
// send).
type capturingChannel struct {
	session.Channel
	mu   sync.Mutex
	pkts [][]byte
}

func (c *capturingChannel) WritePackets(bufs [][]byte, offset int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bufs {
		c.pkts = append(c.pkts, append([]byte(nil), b[offset:]...))
	}
	return nil
}

// dtlsSession brings up a session of alice with a DTLS peer that carries
// its downstream traffic, on an in-process server (DPD 60 s: the liveness
// watch stays out of the way).
func dtlsSession(t *testing.T, pool string) (*Server, *Session) {
	t.Helper()
	cfg := DefaultConfig(t.TempDir())
	cfg.IPv4Network = pool
	cfg.DPD, cfg.Keepalive = 60, 0
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
	t.Cleanup(func() { dc.Close() })
	waitUntil(t, 5*time.Second, "DTLS peer up", func() bool {
		peer := sess.peer.Load()
		return peer != nil && peer.Up() && sess.preferDTLS.Load()
	})
	return s, sess
}

// downlinkPackets is a batch of n packets to sess, as the TUN reader
// queues them, and a copy of each packet.
func downlinkPackets(s *Server, sess *Session, n int) (pkts, want [][]byte) {
	b := newBatch(s.cfg.MTU)
	for i := range n {
		p := ipv4Packet("10.77.0.1", sess.addr.String())
		p[4] = byte(i) // identification: each packet differs
		b.add(p)
		want = append(want, p)
	}
	return b.pkts[:b.n], want
}

// TestDTLSFallbackCounted: packets for a session whose downstream traffic
// goes over DTLS, sent over TLS because the DTLS peer has closed (and the
// liveness watch has not dropped it yet), arrive intact and are counted.
func TestDTLSFallbackCounted(t *testing.T) {
	s, sess := dtlsSession(t, "10.95.0.0/24")
	sess.peer.Load().Close() // as the listener closes a peer (alert, goodbye)
	pkts, want := downlinkPackets(s, sess, 3)
	var ch capturingChannel
	if err := sess.send(&ch, pkts); err != nil {
		t.Fatal(err)
	}
	if len(ch.pkts) != len(want) {
		t.Fatalf("%d packets over TLS, want %d", len(ch.pkts), len(want))
	}
	for i := range want {
		if string(ch.pkts[i]) != string(want[i]) {
			t.Fatalf("packet %d over TLS differs from the one sent", i)
		}
	}
	if n := s.Snapshot().DTLSFallback; n != 3 {
		t.Fatalf("dtls fallback packets %d, want 3", n)
	}
}

// TestDTLSSealedSendNotResent: a DTLS send that fails after the packets
// were sealed in place (the socket is gone) must not send them over TLS,
// where they would arrive as ciphertext: they are dropped and counted
// (drop reason dtls-write).
func TestDTLSSealedSendNotResent(t *testing.T) {
	s, sess := dtlsSession(t, "10.96.0.0/24")
	s.udp.Close() // every DTLS write fails now, after sealing
	pkts, want := downlinkPackets(s, sess, 3)
	var ch capturingChannel
	if err := sess.send(&ch, pkts); err != nil {
		t.Fatal(err)
	}
	for i, p := range ch.pkts {
		if string(p) != string(want[i]) {
			t.Fatalf("packet %d went over TLS altered (sealed for DTLS in place)", i)
		}
	}
	if len(ch.pkts) != 0 {
		t.Fatalf("%d sealed packets sent over TLS", len(ch.pkts))
	}
	snap := s.Snapshot()
	if n := snap.Drops["dtls-write"]; n != 3 {
		t.Fatalf("dtls-write drops %d, want 3", n)
	}
	if snap.DTLSFallback != 0 {
		t.Fatalf("dtls fallback packets %d, want 0", snap.DTLSFallback)
	}
}

package dtls

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"kvpn/cstp"
)

func suiteName(chacha bool) string {
	if chacha {
		return "chacha20"
	}
	return "aes128gcm"
}

// TestHappyPath: a handshake routed by App-ID, one PeerUp, and batches of
// 1..64 packets of 20..1400 bytes byte-exact in both directions, for both
// suites.
func TestHappyPath(t *testing.T) {
	for _, chacha := range []bool{false, true} {
		t.Run(suiteName(chacha), func(t *testing.T) {
			s := newTestServer(t, chacha)
			c, p := s.connect(t, s.addr)

			wantSuite := "AES_128_GCM"
			if chacha {
				wantSuite = "CHACHA20_POLY1305"
			}
			if !strings.Contains(c.Name(), wantSuite) || !strings.Contains(p.Name(), wantSuite) {
				t.Errorf("suites: client %q, server %q, want %s", c.Name(), p.Name(), wantSuite)
			}
			if !p.Up() {
				t.Fatal("peer not up")
			}
			if want := c.LocalAddr().(*net.UDPAddr).AddrPort(); p.Addr() != want {
				t.Errorf("peer address %v, want the client's %v", p.Addr(), want)
			}

			rng := rand.New(rand.NewPCG(1, uint64(len(wantSuite))))
			total, bytesUp := 0, 0
			for n := 1; n <= 64; n++ {
				pkts := randomPackets(rng, n)
				samePackets(t, "client to server", clientSend(t, s, c, pkts), pkts)
				total += n
				for _, p := range pkts {
					bytesUp += len(p)
				}
			}
			for n := 1; n <= 64; n++ {
				pkts := randomPackets(rng, n)
				if err := p.WritePackets(withRoom(pkts), room); err != nil {
					t.Fatalf("peer WritePackets: %v", err)
				}
				samePackets(t, "server to client", clientRead(t, c, n), pkts)
			}

			if got := s.owner.ups(); got != 1 {
				t.Errorf("PeerUp called %d times, want 1", got)
			}
			if got := s.finds.Load(); got != 1 {
				t.Errorf("Find called %d times, want 1", got)
			}
			if got := s.owner.checks.Load(); got != int64(total) {
				t.Errorf("Check called %d times, want %d", got, total)
			}
			ps, cs := p.Stats(), c.Stats()
			if ps.RxPackets.Load() != uint64(total) || ps.RxBytes.Load() != uint64(bytesUp) || cs.TxPackets.Load() != uint64(total) || cs.TxBytes.Load() != uint64(bytesUp) {
				t.Errorf("upstream stats: server rx %d/%d, client tx %d/%d, want %d/%d",
					ps.RxPackets.Load(), ps.RxBytes.Load(), cs.TxPackets.Load(), cs.TxBytes.Load(), total, bytesUp)
			}
			if ps.TxPackets.Load() != uint64(total) || cs.RxPackets.Load() != uint64(total) {
				t.Errorf("downstream stats: server tx %d, client rx %d, want %d", ps.TxPackets.Load(), cs.RxPackets.Load(), total)
			}
			if ps.BadRecords.Load() != 0 || cs.BadRecords.Load() != 0 {
				t.Errorf("bad records: server %d, client %d", ps.BadRecords.Load(), cs.BadRecords.Load())
			}
			lc := &s.l.Counters
			for name, v := range map[string]uint64{
				"NoSession": lc.NoSession.Load(), "HandshakeLimit": lc.HandshakeLimit.Load(),
				"HandshakeFailed": lc.HandshakeFailed.Load(), "BadRecords": lc.BadRecords.Load(),
				"Roamed": lc.Roamed.Load(), "Rejected": lc.Rejected.Load(),
			} {
				if v != 0 {
					t.Errorf("Counters.%s = %d, want 0", name, v)
				}
			}
		})
	}
}

// TestRejectedByCheck: a packet the Owner refuses is counted and does not
// reach the TUN device; the next one does.
func TestRejectedByCheck(t *testing.T) {
	s := newTestServer(t, false)
	c, _ := s.connect(t, s.addr)
	v6 := make([]byte, 40)
	v6[0] = 0x60
	good := ipv4Packet(rand.New(rand.NewPCG(3, 3)), 100)
	if err := c.WritePackets(withRoom([][]byte{v6, good}), room); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the IPv4 packet", func() bool { return s.tun.count() == 1 })
	samePackets(t, "TUN", s.tun.packets(), [][]byte{good})
	if got := s.l.Counters.Rejected.Load(); got != 1 {
		t.Errorf("Rejected = %d, want 1", got)
	}
}

// TestDPD: DPD requests are answered both ways (LastReceive advances on the
// side that asked), keepalives count as traffic, and a 1400-byte DPD-REQ
// (openconnect's MTU probe) is echoed in full.
func TestDPD(t *testing.T) {
	for _, chacha := range []bool{false, true} {
		t.Run(suiteName(chacha), func(t *testing.T) {
			s := newTestServer(t, chacha)
			c, p := s.connect(t, s.addr)

			// Client asks, server answers.
			before := c.LastReceive()
			sentBefore := c.LastSend()
			if err := c.Ping(); err != nil {
				t.Fatal(err)
			}
			if !c.LastSend().After(sentBefore) {
				t.Error("client LastSend did not advance on Ping")
			}
			for !c.LastReceive().After(before) {
				pkts, err := clientReadOnce(c, 2*time.Second)
				if err != nil {
					t.Fatalf("waiting for the DPD-RESP: %v", err)
				}
				if len(pkts) != 0 {
					t.Fatalf("a DPD-RESP came out as %d packets", len(pkts))
				}
			}

			// Server asks, client answers (inside ReadPackets).
			before = p.LastReceive()
			if err := p.Ping(); err != nil {
				t.Fatal(err)
			}
			if pkts, err := clientReadOnce(c, 2*time.Second); err != nil || len(pkts) != 0 {
				t.Fatalf("client read of the DPD-REQ: %d packets, %v", len(pkts), err)
			}
			waitFor(t, "server LastReceive after the DPD-RESP", func() bool { return p.LastReceive().After(before) })

			// Keepalive: traffic for LastReceive, nothing for the TUN.
			before = p.LastReceive()
			if err := c.Keepalive(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "server LastReceive after a keepalive", func() bool { return p.LastReceive().After(before) })
			if n := s.tun.count(); n != 0 {
				t.Errorf("%d packets at the TUN from control records", n)
			}

			// MTU probe: a 1400-byte DPD-REQ comes back as a 1400-byte
			// DPD-RESP with the same bytes. Read the raw record at the
			// client and open it with the client's datapath.
			probe := bytes.Repeat([]byte("mtu-probe"), 156)[:1400]
			if err := c.sendControl(cstp.TypeDPDReq, probe); err != nil {
				t.Fatal(err)
			}
			c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 65536)
			n, err := c.conn.Read(buf)
			c.conn.SetReadDeadline(time.Time{})
			if err != nil {
				t.Fatalf("reading the probe's answer: %v", err)
			}
			if want := c.d.hr + len(probe) + c.d.sealer.Tailroom(); n != want {
				t.Errorf("answer datagram of %d bytes, want %d", n, want)
			}
			typ, payload, err := c.d.open(buf[:n])
			if err != nil {
				t.Fatalf("opening the answer: %v", err)
			}
			if typ != cstp.TypeDPDResp || !bytes.Equal(payload, probe) {
				t.Errorf("answer: type %v, %d bytes, want DPD-RESP with the 1400-byte probe", typ, len(payload))
			}
		})
	}
}

// TestNoSession: a ClientHello whose App-ID names no session starts no
// handshake and is counted; the client's Dial times out.
func TestNoSession(t *testing.T) {
	s := newTestServer(t, false)
	s.known.Store(false)
	start := time.Now()
	c, err := Dial(context.Background(), ClientConfig{Server: s.addr, AppID: s.appID, PSK: s.psk, Timeout: 300 * time.Millisecond})
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded without a session")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v with a 300ms timeout", d)
	}
	waitFor(t, "NoSession", func() bool { return s.l.Counters.NoSession.Load() >= 1 })
	if s.finds.Load() < 1 {
		t.Error("Find was not asked")
	}
	if n := s.owner.ups(); n != 0 {
		t.Errorf("PeerUp called %d times", n)
	}
	if n := s.peerCount(); n != 0 {
		t.Errorf("%d peers routed", n)
	}
	if n := s.l.Counters.HandshakeFailed.Load(); n != 0 {
		t.Errorf("HandshakeFailed = %d: a handshake was started", n)
	}
}

// TestDialBadAppID: Dial refuses an App-ID of the wrong size.
func TestDialBadAppID(t *testing.T) {
	_, err := Dial(context.Background(), ClientConfig{Server: netip.MustParseAddrPort("127.0.0.1:9"), AppID: make([]byte, 16), PSK: make([]byte, 32)})
	if err == nil {
		t.Fatal("16-byte App-ID accepted")
	}
}

// garbage is a set of malformed datagrams; first forces the first byte
// when non-zero (23 keeps them on the data path of a known peer).
func garbage(rng *rand.Rand, first byte) map[string][]byte {
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if first != 0 && n > 0 {
			b[0] = first
		}
		return b
	}
	badLen := rnd(40)
	copy(badLen, []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0x40, 0x00}) // claims 16 KiB
	shortLen := rnd(60)
	copy(shortLen, []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 8, 0x00, 0x02}) // body shorter than nonce and tag
	g := map[string][]byte{
		"one byte":         {23},
		"truncated header": {23, 0xfe, 0xfd, 0, 1, 0, 0},
		"bad length":       badLen,
		"short body":       shortLen,
		"random 200":       rnd(200),
		"random 64KiB":     rnd(65507), // the largest IPv4 UDP payload
	}
	if first == 0 {
		unknownHello := clientHello(bytes.Repeat([]byte{0x5a}, AppIDLen))
		g["ClientHello, unknown App-ID"] = unknownHello
		g["handshake record, not a ClientHello"] = append([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 4}, 2, 0, 0, 0)
		g["one byte 22"] = []byte{22}
	}
	return g
}

// TestGarbage: malformed datagrams from a stranger and from the peer's own
// address are dropped and counted, never panic, and the session works
// afterwards.
func TestGarbage(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	rng := rand.New(rand.NewPCG(4, 4))

	stranger := listenUDP(t, "127.0.0.1:0")
	defer stranger.Close()
	if _, err := stranger.WriteToUDPAddrPort(nil, s.addr); err != nil { // empty: ignored
		t.Fatal(err)
	}
	g := garbage(rng, 0)
	for name, dg := range g {
		if _, err := stranger.WriteToUDPAddrPort(dg, s.addr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	waitFor(t, "NoSession for every stranger datagram", func() bool { return s.l.Counters.NoSession.Load() >= uint64(len(g)) })
	if got := s.l.Counters.NoSession.Load(); got != uint64(len(g)) {
		t.Errorf("NoSession = %d, want %d", got, len(g))
	}

	// From the peer's address, on its data path.
	r.InjectUp(nil)
	mine := garbage(rng, 23)
	for _, dg := range mine {
		r.InjectUp(dg)
	}
	waitFor(t, "BadRecords for every datagram from the peer", func() bool { return s.l.Counters.BadRecords.Load() >= uint64(len(mine)) })
	if got := p.Stats().BadRecords.Load(); got < uint64(len(mine)) {
		t.Errorf("peer BadRecords = %d, want >= %d", got, len(mine))
	}

	if n := s.tun.count(); n != 0 {
		t.Fatalf("%d packets reached the TUN from garbage", n)
	}
	if s.owner.ups() != 1 || !p.Up() || p.Addr() != r.UpAddr() {
		t.Fatalf("the session moved or closed: ups %d, up %v, addr %v", s.owner.ups(), p.Up(), p.Addr())
	}
	if n := s.l.Counters.Roamed.Load(); n != 0 {
		t.Errorf("Roamed = %d", n)
	}

	// The session still works both ways.
	pkts := randomPackets(rng, 8)
	samePackets(t, "client to server after garbage", clientSend(t, s, c, pkts), pkts)
	pkts = randomPackets(rng, 8)
	if err := p.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatal(err)
	}
	samePackets(t, "server to client after garbage", clientRead(t, c, len(pkts)), pkts)
}

// holdUpData makes the relay hold back client->server application data
// records until the returned release is called, and returns a function
// that waits for the n-th held record.
func holdUpData(t *testing.T, r *relay) (wait func(n int) []byte, release func()) {
	start := len(r.captured(true, 23))
	r.setDrop(isData, nil)
	wait = func(n int) []byte {
		t.Helper()
		var recs [][]byte
		waitFor(t, "the relay to capture a data record", func() bool {
			recs = r.captured(true, 23)[start:]
			return len(recs) >= n
		})
		return bytes.Clone(recs[n-1])
	}
	return wait, func() { r.setDrop(nil, nil) }
}

// TestBadTag: a record from the peer's address with any bit of header,
// body or tag flipped fails authentication, is counted and not delivered,
// and does not burn its sequence number: the genuine record is accepted
// afterwards.
func TestBadTag(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	rng := rand.New(rand.NewPCG(5, 5))

	wait, release := holdUpData(t, r)
	pkt := ipv4Packet(rng, 300)
	if err := c.WritePackets(withRoom([][]byte{pkt}), room); err != nil {
		t.Fatal(err)
	}
	rec := wait(1)
	release()
	if want := 13 + 8 + 1 + len(pkt) + 16; len(rec) != want {
		t.Fatalf("captured record of %d bytes, want %d", len(rec), want)
	}
	flips := map[string]int{
		"type":           0,
		"epoch":          4,
		"sequence":       10,
		"explicit nonce": 20,
		"type byte":      21,
		"payload":        100,
		"tag":            len(rec) - 1,
	}
	n := 0
	for name, i := range flips {
		bad := bytes.Clone(rec)
		bad[i] ^= 0x01
		if name == "type" {
			bad[i] = 21 // an alert record with a bad tag must not close the peer
		}
		r.InjectUp(bad)
		n++
		waitFor(t, "BadRecords after a flipped "+name, func() bool { return s.l.Counters.BadRecords.Load() == uint64(n) })
	}
	if got := s.tun.count(); got != 0 {
		t.Fatalf("%d forged packets delivered", got)
	}
	if !p.Up() {
		t.Fatal("peer closed by a forged record")
	}
	r.InjectUp(rec)
	waitFor(t, "the genuine record", func() bool { return s.tun.count() == 1 })
	samePackets(t, "genuine record", s.tun.take(), [][]byte{pkt})
	if got := s.l.Counters.BadRecords.Load(); got != uint64(n) {
		t.Errorf("BadRecords = %d, want %d", got, n)
	}
}

// TestReplay: a valid record sent again, at once or after newer ones,
// arrives once; the copies are counted as bad records.
func TestReplay(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, _ := s.connect(t, r.Addr())
	rng := rand.New(rand.NewPCG(6, 6))

	pkt := ipv4Packet(rng, 500)
	samePackets(t, "first", clientSend(t, s, c, [][]byte{pkt}), [][]byte{pkt})
	recs := r.captured(true, 23)
	rec := recs[len(recs)-1]

	r.InjectUp(rec)
	waitFor(t, "BadRecords for the replay", func() bool { return s.l.Counters.BadRecords.Load() == 1 })
	more := randomPackets(rng, 5)
	samePackets(t, "newer packets", clientSend(t, s, c, more), more)
	r.InjectUp(rec)
	waitFor(t, "BadRecords for the late replay", func() bool { return s.l.Counters.BadRecords.Load() == 2 })
	// A whole batch replayed in one go.
	for _, dg := range r.captured(true, 23) {
		r.InjectUp(dg)
	}
	total := len(r.captured(true, 23))
	waitFor(t, "BadRecords for the replayed batch", func() bool { return s.l.Counters.BadRecords.Load() == uint64(2+total) })
	if n := s.tun.count(); n != 0 {
		t.Fatalf("%d replayed packets delivered", n)
	}
}

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

// TestServerSideAlertClosesPeer: an authentic alert from the client closes
// the server's peer (a forged one does not: TestBadTag).
func TestServerSideAlertClosesPeer(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	// An alert record sealed with the client's keys: close_notify.
	if _, err := c.conn.Write(sealAlert(t, c.d, 1, 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peer to close", func() bool { return !p.Up() && s.peerCount() == 0 })
	if n := s.peerCount(); n != 0 {
		t.Errorf("%d routed addresses after the alert", n)
	}
}

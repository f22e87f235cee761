package dtls

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
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

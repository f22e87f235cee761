package dtls

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
	"kvpn/session"
)

// TestClientDropsForgedAndReplayed: records sent to the client with a
// flipped bit or a second time are dropped and counted in Stats.BadRecords;
// the genuine record, held back until after the forgeries, still arrives.
func TestClientDropsForgedAndReplayed(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	rng := rand.New(rand.NewPCG(10, 10))

	start := len(r.captured(false, 23))
	r.setDrop(nil, isData)
	pkt := ipv4Packet(rng, 700)
	if err := p.WritePackets(withRoom([][]byte{pkt}), room); err != nil {
		t.Fatal(err)
	}
	var rec []byte
	waitFor(t, "the relay to capture the record", func() bool {
		recs := r.captured(false, 23)[start:]
		if len(recs) > 0 {
			rec = recs[0]
		}
		return rec != nil
	})
	r.setDrop(nil, nil)

	bad := uint64(0)
	for name, i := range map[string]int{
		"alert type": 0, "epoch": 4, "sequence": 9, "nonce": 15,
		"type byte": 21, "payload": 300, "tag": len(rec) - 1,
	} {
		f := bytes.Clone(rec)
		f[i] ^= 0x02
		if name == "alert type" {
			f[i] = byte(recordlayer.Alert)
		}
		r.InjectDown(f)
		got, err := clientReadOnce(c, 2*time.Second)
		if err != nil || len(got) != 0 {
			t.Fatalf("%s: ReadPackets returned %d packets, %v", name, len(got), err)
		}
		bad++
		if n := c.Stats().BadRecords.Load(); n != bad {
			t.Fatalf("%s: BadRecords = %d, want %d", name, n, bad)
		}
	}

	r.InjectDown(rec)
	samePackets(t, "genuine", clientRead(t, c, 1), [][]byte{pkt})
	r.InjectDown(rec)
	got, err := clientReadOnce(c, 2*time.Second)
	if err != nil || len(got) != 0 {
		t.Fatalf("replay: %d packets, %v", len(got), err)
	}
	if n := c.Stats().BadRecords.Load(); n != bad+1 {
		t.Errorf("BadRecords = %d after the replay, want %d", n, bad+1)
	}
	// Garbage from the server's address.
	for _, dg := range [][]byte{{23}, {23, 0xfe, 0xfd, 0, 1}, bytes.Repeat([]byte{23}, 100)} {
		r.InjectDown(dg)
		if got, err := clientReadOnce(c, 2*time.Second); err != nil || len(got) != 0 {
			t.Fatalf("garbage: %d packets, %v", len(got), err)
		}
	}
	if n := c.Stats().BadRecords.Load(); n != bad+4 {
		t.Errorf("BadRecords = %d after garbage, want %d", n, bad+4)
	}
	// Still working.
	pkts := randomPackets(rng, 10)
	if err := p.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatal(err)
	}
	samePackets(t, "afterwards", clientRead(t, c, len(pkts)), pkts)
}

// TestClientPeerClosed: DISCONNECT and TERMINATE from the server end
// ReadPackets with *session.PeerClosedError, after the packets sent before
// them; so does an authentic alert.
func TestClientPeerClosed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		send      func(p *Peer) error
		terminate bool
		reason    string
	}{
		{"disconnect", func(p *Peer) error { return p.sendControl(cstp.TypeDisconnect, nil) }, false, ""},
		{"terminate", func(p *Peer) error { return p.sendControl(cstp.TypeTerminate, nil) }, true, ""},
		{"alert", func(p *Peer) error {
			rec := sealAlert(t, p.d.Load(), 2, 40) // fatal handshake_failure
			_, err := p.l.cfg.Conn.WriteToUDPAddrPort(rec, p.Addr())
			return err
		}, false, "alert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, false)
			c, p := s.connect(t, s.addr)
			pkts := randomPackets(rand.New(rand.NewPCG(11, 11)), 3)
			if err := p.WritePackets(withRoom(pkts), room); err != nil {
				t.Fatal(err)
			}
			if err := tc.send(p); err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			var err error
			for err == nil {
				var k [][]byte
				k, err = clientReadOnce(c, 2*time.Second)
				got = append(got, k...)
			}
			var pc *session.PeerClosedError
			if !errors.As(err, &pc) {
				t.Fatalf("ReadPackets: %v, want *session.PeerClosedError", err)
			}
			if pc.Terminate != tc.terminate || !strings.Contains(pc.Reason, tc.reason) {
				t.Errorf("PeerClosedError %+v", pc)
			}
			samePackets(t, "packets before the end", got, pkts)
		})
	}
}

// TestClientDisconnect: the client's DISCONNECT closes the server's peer,
// which then refuses to send.
func TestClientDisconnect(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	if err := c.Disconnect("bye"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peer to close", func() bool { return !p.Up() && s.peerCount() == 0 })
	if n := s.peerCount(); n != 0 {
		t.Errorf("%d routed addresses", n)
	}
	for name, err := range map[string]error{
		"WritePackets": p.WritePackets(withRoom([][]byte{make([]byte, 20)}), room),
		"Ping":         p.Ping(),
		"Keepalive":    p.Keepalive(),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("peer %s after DISCONNECT: %v, want net.ErrClosed", name, err)
		}
	}
	if err := c.WritePackets(withRoom([][]byte{make([]byte, 20)}), room); err == nil {
		t.Error("client WritePackets after Disconnect succeeded")
	}
	if _, err := clientReadOnce(c, time.Second); !errors.Is(err, net.ErrClosed) {
		t.Errorf("client ReadPackets after Disconnect: %v, want net.ErrClosed", err)
	}
}

// TestHeadroomChecks: too little headroom is an error, not a panic, on
// both sides.
func TestHeadroomChecks(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	if c.Headroom() != 22 {
		t.Errorf("client Headroom %d, want 22 for AES-GCM", c.Headroom())
	}
	small := [][]byte{make([]byte, 10+20, 10+20+tail)}
	if err := c.WritePackets(small, 10); err == nil {
		t.Error("client WritePackets with 10 bytes of headroom succeeded")
	}
	if err := p.WritePackets(small, 10); err == nil {
		t.Error("peer WritePackets with 10 bytes of headroom succeeded")
	}
	if _, err := c.ReadPackets([][]byte{make([]byte, 100)}, []int{0}, 10); err == nil {
		t.Error("client ReadPackets with 10 bytes of headroom succeeded")
	}
	noTail := [][]byte{make([]byte, room+20, room+20)}
	if err := c.WritePackets(noTail, room); err == nil {
		t.Error("client WritePackets without tailroom succeeded")
	}
}

package dtls

// After the takeover, pion's Conn stays alive on both sides to answer a
// retransmitted final flight, and both the Listener and ClientChannel hand
// it every datagram whose first byte is handshake (22) or
// change_cipher_spec (20), without authentication. These tests check what
// pion does with such datagrams.

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"kvpn/session"
)

// badCCS is an unauthenticated epoch-0 change_cipher_spec record whose
// body is not the single byte 1: pion answers it with a fatal
// decode_error alert, and returns an error from its read loop.
func badCCS(seq byte) []byte {
	return []byte{20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0x10, seq, 0, 1, 5}
}

// TestTakeoverPionAlertFromUnauthenticatedDatagram: a single unauthenticated
// datagram from the peer's address (spoofable by anyone who knows the
// address pair) must not end the DTLS channel. It makes the peer's pion send
// a fatal alert sealed with the session keys and pion's own sequence
// numbers; until the first data record in that direction has moved the
// receiver's replay window past them, the receiver's record layer accepts
// the alert as authentic and closes the channel.
func TestTakeoverPionAlertFromUnauthenticatedDatagram(t *testing.T) {
	t.Run("to server, client closes", func(t *testing.T) {
		s := newTestServer(t, false)
		r := newRelay(t, s.addr)
		c, p := s.connect(t, r.Addr())

		r.InjectUp(badCCS(1)) // from the client's address, as the server sees it
		_, err := clientReadOnce(c, 200*time.Millisecond)
		if anyAlert(r.captured(false, 0)) {
			t.Errorf("BUG: the server sent an alert record (sealed by pion) in answer to an unauthenticated datagram")
		}
		var pc *session.PeerClosedError
		if errors.As(err, &pc) {
			t.Errorf("BUG: one unauthenticated datagram to the server closed the client's channel: %v", err)
		} else if !isTimeout(err) {
			t.Errorf("client ReadPackets: %v", err)
		}
		if !p.Up() {
			t.Error("server peer closed")
		}
	})
	t.Run("to client, server closes peer", func(t *testing.T) {
		s := newTestServer(t, false)
		r := newRelay(t, s.addr)
		c, p := s.connect(t, r.Addr())

		r.InjectDown(badCCS(1))                // from the server's address, as the client sees it
		clientReadOnce(c, 50*time.Millisecond) // hands it to the client's pion
		for deadline := time.Now().Add(300 * time.Millisecond); p.Up() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if anyAlert(r.captured(true, 0)) {
			t.Errorf("BUG: the client sent an alert record (sealed by pion) in answer to an unauthenticated datagram")
		}
		if !p.Up() {
			t.Errorf("BUG: one unauthenticated datagram to the client closed the server's peer")
		}
	})
}

func anyAlert(dgs [][]byte) bool {
	for _, dg := range dgs {
		if len(dg) > 0 && dg[0] == 21 {
			return true
		}
	}
	return false
}

// TestTakeoverPionWedgeLeaksGoroutines: after two such datagrams pion's
// read loop blocks for good (it hands each error to a Read nobody calls,
// through a channel of one), and since pion's Conn is never Closed,
// closing the peer and the client no longer ends its goroutines.
func TestTakeoverPionWedgeLeaksGoroutines(t *testing.T) {
	run := func(t *testing.T, inject bool) int {
		base := runtime.NumGoroutine()
		s := newTestServer(t, false)
		r := newRelay(t, s.addr)
		c, p := s.connect(t, r.Addr())
		if inject {
			for i := range byte(3) {
				r.InjectUp(badCCS(i))
				r.InjectDown(badCCS(i))
				clientReadOnce(c, 20*time.Millisecond)
			}
		}
		pkts := randomPackets(rand.New(rand.NewPCG(12, 12)), 2)
		samePackets(t, "data", clientSend(t, s, c, pkts), pkts)
		c.Close()
		p.Close()
		s.closePeers()
		// base counts only the goroutines before the server, relay and
		// client: close those too before counting.
		s.conn.Close()
		r.down.Close()
		r.mu.Lock()
		r.up.Close()
		r.mu.Unlock()
		r.wg.Wait()
		return goroutinesSettle(base, time.Second) - base
	}
	if extra := run(t, false); extra > 0 {
		t.Fatalf("control: %d goroutines left after closing a clean session", extra)
	}
	if extra := run(t, true); extra > 0 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range bytes.Split(buf, []byte("\n\n")) {
			if bytes.Contains(g, []byte("pion/dtls")) {
				t.Logf("%s", g)
			}
		}
		t.Errorf("BUG: %d goroutines (pion's) left after closing a session whose pion saw unauthenticated datagrams", extra)
	}
}

// TestDataRightAfterHandshake: the first data records after the
// handshake arrive, in either direction, however soon they are sent; and
// they leave nothing behind. Each round sends 8 packets as early as the
// API allows (client: as Dial returns; server: from PeerUp), then a marker
// packet once both sides are up; on loopback the marker arrives after the
// early packets, so any early packet not delivered before it was lost.
// Where they go: before the datapath is installed, the server's Listener
// and the client's handshake reader hand every datagram to pion, which
// decrypts the records as application data for a Read nobody calls, and
// whose read loop blocks for good at the second one (see
// TestTakeoverPionWedgeLeaksGoroutines).
func TestDataRightAfterHandshake(t *testing.T) {
	const rounds, early = 10, 8
	marker := func(rng *rand.Rand) []byte {
		m := ipv4Packet(rng, 64)
		copy(m[20:], "marker")
		return m
	}
	t.Run("client sends as Dial returns", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(13, 13))
		base := runtime.NumGoroutine()
		lost := 0
		for range rounds {
			s := newTestServer(t, false)
			c := s.dial(t, s.addr)
			if err := c.WritePackets(withRoom(randomPackets(rng, early)), room); err != nil {
				t.Fatal(err)
			}
			s.waitPeer(t, 1)
			m := marker(rng)
			if err := c.WritePackets(withRoom([][]byte{m}), room); err != nil {
				t.Fatal(err)
			}
			var before int
			waitFor(t, "the marker", func() bool {
				for i, p := range s.tun.packets() {
					if bytes.Equal(p, m) {
						before = i
						return true
					}
				}
				return false
			})
			lost += early - before
			c.Close()
			s.conn.Close()
			s.closePeers()
		}
		if lost > 0 {
			t.Errorf("BUG: %d of %d packets sent right after Dial were lost", lost, rounds*early)
		}
		if extra := goroutinesSettle(base, time.Second) - base; extra > 0 {
			t.Errorf("BUG: %d goroutines left after closing every session", extra)
		}
	})
	t.Run("server sends from PeerUp", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(14, 14))
		base := runtime.NumGoroutine()
		lost := 0
		for range rounds {
			s := newTestServer(t, false)
			pkts := randomPackets(rng, early)
			// waitPeer returns once PeerUp has counted the peer, which is
			// before onUp has sent the early packets: the marker waits
			// for them, or it could overtake them.
			sent := make(chan struct{})
			s.owner.setOnUp(func(p *Peer) {
				defer close(sent)
				if err := p.WritePackets(withRoom(pkts), room); err != nil {
					t.Error(err)
				}
			})
			c := s.dial(t, s.addr)
			p := s.waitPeer(t, 1)
			<-sent
			m := marker(rng)
			if err := p.WritePackets(withRoom([][]byte{m}), room); err != nil {
				t.Fatal(err)
			}
			before := 0
			for {
				got, err := clientReadOnce(c, 5*time.Second)
				if err != nil {
					t.Fatalf("waiting for the marker: %v", err)
				}
				i := slices.IndexFunc(got, func(p []byte) bool { return bytes.Equal(p, m) })
				if i >= 0 {
					before += i
					break
				}
				before += len(got)
			}
			lost += early - before
			c.Close()
			s.conn.Close()
			s.closePeers()
		}
		if lost > 0 {
			t.Errorf("BUG: %d of %d packets sent from PeerUp were lost", lost, rounds*early)
		}
		if extra := goroutinesSettle(base, time.Second) - base; extra > 0 {
			t.Errorf("BUG: %d goroutines left after closing every session", extra)
		}
	})
}

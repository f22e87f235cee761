package dtls

// Tests that document behaviour the code's own comments or counters'
// documentation promise and that does not hold (see also takeover_test.go).

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestTUNViewKeepsCapacity: Peer.dispatch says "For a datagram of one
// record the view keeps the buffer's capacity (the TUN device's GRO may
// append coalesced segments there)". wireguard-go's GRO refuses to coalesce
// into a packet whose capacity is short (coalesceInsufficientCap), so this
// is what lets the server's TUN coalesce DTLS upstream traffic. But
// record.NextRecord caps the record at its end, so the view has only the
// 16 tag bytes behind the packet.
func TestTUNViewKeepsCapacity(t *testing.T) {
	s := newTestServer(t, false)
	c, _ := s.connect(t, s.addr)
	pkt := ipv4Packet(rand.New(rand.NewPCG(20, 20)), 1000)
	clientSend(t, s, c, [][]byte{pkt})
	s.tun.mu.Lock()
	spare := s.tun.spare[len(s.tun.spare)-1]
	s.tun.mu.Unlock()
	if spare < 1500 {
		t.Errorf("BUG: a single-record datagram reaches the TUN with %d bytes of capacity behind the packet; "+
			"dispatch means to keep the receive buffer's (up to %d) for GRO", spare, recvBufSize)
	}
}

// TestAlertNotCountedAsBadRecord: Counters.BadRecords is documented as
// "failed authentication, replay, bad epoch"; an authentic close_notify
// from the client is none of these (the peer's own Stats.BadRecords does
// not count it), yet Peer.receive counts every error from open, alerts
// included.
func TestAlertNotCountedAsBadRecord(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	if _, err := c.conn.Write(sealAlert(t, c.d, 1, 0)); err != nil { // warning, close_notify
		t.Fatal(err)
	}
	waitFor(t, "the peer to close", func() bool { return !p.Up() && s.peerCount() == 0 })
	if n := p.Stats().BadRecords.Load(); n != 0 {
		t.Errorf("peer Stats.BadRecords = %d", n)
	}
	if n := s.l.Counters.BadRecords.Load(); n != 0 {
		t.Errorf("BUG: Counters.BadRecords = %d after an authentic close_notify", n)
	}
}

// TestStaleClientHelloKeepsChannel: a copy of the ClientHello that
// started the established channel (a duplicated or late datagram, or one
// replayed by anyone who saw it: the App-ID travels in clear) arriving from
// the client's address makes the Listener start a new handshake and close
// the established peer at once, before the new handshake proved anything.
// The real client never answers that handshake, its data records go to
// the pending handshake's pion and are lost, and once that handshake times
// out nothing routes the address any more: the channel is dead until the
// client's DPD gives up on it.
func TestStaleClientHelloKeepsChannel(t *testing.T) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	hello := r.captured(true, 22)[0]
	if _, err := ClientHelloAppID(hello); err != nil {
		t.Fatalf("first datagram is not the ClientHello: %v", err)
	}
	r.InjectUp(hello)
	waitFor(t, "the server to look the App-ID up again", func() bool { return s.finds.Load() == 2 })
	if !p.Up() {
		t.Errorf("BUG: a stale copy of the ClientHello closed the established peer")
	}
	pkts := randomPackets(rand.New(rand.NewPCG(21, 21)), 4)
	if err := c.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for s.tun.count() < len(pkts) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := s.tun.count(); n != len(pkts) {
		t.Errorf("BUG: %d of %d packets delivered after a stale ClientHello", n, len(pkts))
	}
}

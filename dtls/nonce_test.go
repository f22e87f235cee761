package dtls

// After the takeover pion's Conn shares the data key with kvpn's Sealer.
// These tests flood an established peer with unauthenticated handshake
// datagrams from its own address and check, on every datagram the other
// side sends, that no (epoch, sequence number) pair, and so no AEAD nonce
// (RFC 5288 section 3, RFC 7905 section 2), is ever used twice, and that
// the flood is not amplified.

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

// recordNumbers returns the (epoch, seq) of every record in a datagram;
// ok is false if the datagram does not parse as DTLS 1.2 records. cidLen
// is the length of the connection ID in tls12_cid (25) records.
func recordNumbers(dg []byte, cidLen int) (nums [][2]uint64, ok bool) {
	for len(dg) > 0 {
		hl := 13
		if dg[0] == 25 {
			hl += cidLen
		}
		if len(dg) < hl {
			return nums, false
		}
		epoch := uint64(binary.BigEndian.Uint16(dg[3:5]))
		seq := uint64(binary.BigEndian.Uint16(dg[5:7]))<<32 | uint64(binary.BigEndian.Uint32(dg[7:11]))
		n := hl + int(binary.BigEndian.Uint16(dg[hl-2:hl]))
		if n > len(dg) {
			return nums, false
		}
		nums = append(nums, [2]uint64{epoch, seq})
		dg = dg[n:]
	}
	return nums, true
}

// spoofedHandshake is a 25-byte epoch-0 handshake record (an empty
// ClientHello fragment) with record sequence number seq: what anyone who
// knows the address pair can send from the peer's address.
func spoofedHandshake(seq uint64, msgType byte) []byte {
	dg := []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12,
		msgType, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(dg[5:7], uint16(seq>>32))
	binary.BigEndian.PutUint32(dg[7:11], uint32(seq))
	return dg
}

// assertNoNonceReuse fails if two records of a protected epoch in dgs
// carry the same sequence number.
func assertNoNonceReuse(t *testing.T, dgs [][]byte, cidLen int) {
	t.Helper()
	seen := map[[2]uint64]int{}
	for i, dg := range dgs {
		nums, ok := recordNumbers(dg, cidLen)
		if !ok {
			t.Errorf("datagram %d does not parse: %x", i, dg[:min(len(dg), 32)])
		}
		for _, n := range nums {
			if n[0] == 0 {
				continue // unprotected
			}
			if j, dup := seen[n]; dup {
				t.Fatalf("nonce reuse: epoch %d seq %d sealed twice (datagrams %d and %d)", n[0], n[1], j, i)
			}
			seen[n] = i
		}
	}
}

// floodAndCheck floods the server's peer with n spoofed handshake
// datagrams from the client's address, sends data both ways, and checks
// every datagram the server sent for a repeated nonce and the flood for
// amplification.
func floodAndCheck(t *testing.T, n int) {
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	// The client sees only data records: what pion sends in answer to
	// the flood is captured, not delivered.
	r.setDrop(nil, func(dg []byte) bool { return !isData(dg) })
	rng := rand.New(rand.NewPCG(31, 31))
	before := len(r.captured(false, 0))
	spoofed := 0
	for i := range n {
		dg := spoofedHandshake(uint64(100+i), []byte{1, 16, 20}[i%3])
		r.InjectUp(dg)
		spoofed += len(dg)
		if i%256 == 0 {
			time.Sleep(time.Millisecond) // let the listener keep up
		}
	}
	time.Sleep(200 * time.Millisecond)
	// Data from the server under kvpn's Sealer after the flood.
	pkts := randomPackets(rng, 8)
	if err := p.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatal(err)
	}
	samePackets(t, "server to client after the flood", clientRead(t, c, len(pkts)), pkts)
	samePackets(t, "client to server after the flood", clientSend(t, s, c, pkts), pkts)

	all := r.captured(false, 0)
	assertNoNonceReuse(t, all, 0)
	back := 0
	for _, dg := range all[before:] {
		if !isData(dg) {
			back += len(dg)
		}
	}
	t.Logf("%d spoofed datagrams (%d bytes): the server sent %d bytes of handshake records back; %d dropped",
		n, spoofed, back, s.l.Counters.FeedDropped.Load())
	// The budget of resent flights is a few hundred bytes whatever the
	// flood's size.
	if back > 2048 {
		t.Errorf("amplification: %d spoofed bytes drew %d bytes of handshake records to the client's address", spoofed, back)
	}
	if s.l.Counters.FeedDropped.Load() == 0 {
		t.Errorf("Counters.FeedDropped = 0 after a flood")
	}
	if !p.Up() {
		t.Errorf("the flood closed the peer")
	}
}

// TestSpoofedHandshakeFloodNoNonceReuse: 20000 spoofed handshake
// datagrams, far beyond the feed budget, with the real SeqGap.
func TestSpoofedHandshakeFloodNoNonceReuse(t *testing.T) {
	floodAndCheck(t, 20000)
}

// TestSpoofedHandshakeFloodTinyGap: with a Sealer only 3 above pion's
// sequence numbers and an unbounded feed budget, the write guard alone
// keeps pion from sealing a sequence number kvpn's Sealer uses.
func TestSpoofedHandshakeFloodTinyGap(t *testing.T) {
	defer func(g uint64, b int64) { seqGap, feedBudget = g, b }(seqGap, feedBudget)
	seqGap, feedBudget = 3, 1<<30
	s := newTestServer(t, false)
	r := newRelay(t, s.addr)
	c, p := s.connect(t, r.Addr())
	r.setDrop(nil, func(dg []byte) bool { return !isData(dg) })
	rng := rand.New(rand.NewPCG(32, 32))
	pkts := randomPackets(rng, 4)
	for round := range 4 {
		for i := range 50 {
			r.InjectUp(spoofedHandshake(uint64(1000*round+i+10), 20))
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(20 * time.Millisecond)
		if err := p.WritePackets(withRoom(pkts), room); err != nil {
			t.Fatal(err)
		}
		samePackets(t, "server to client", clientRead(t, c, len(pkts)), pkts)
	}
	assertNoNonceReuse(t, r.captured(false, 0), 0)
}

package dtls

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

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

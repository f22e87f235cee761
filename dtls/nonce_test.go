package dtls

// After the takeover pion's Conn shares the data key with kvpn's Sealer.
// These tests flood an established peer with unauthenticated handshake
// datagrams from its own address and check, on every datagram the other
// side sends, that no (epoch, sequence number) pair, and so no AEAD nonce
// (RFC 5288 section 3, RFC 7905 section 2), is ever used twice, and that
// the flood is not amplified.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/dtls/recordlayer"
)

// recordNumbers returns the (epoch, seq) of every record in a datagram;
// ok is false if the datagram does not parse as DTLS 1.2 records. cidLen
// is the length of the connection ID in tls12_cid (25) records.
func recordNumbers(dg []byte, cidLen int) (nums [][2]uint64, ok bool) {
	recs, ok := splitRecords(dg, cidLen)
	for _, r := range recs {
		nums = append(nums, r.num)
	}
	return nums, ok
}

type numberedRecord struct {
	num [2]uint64 // epoch, seq
	rec []byte
}

func splitRecords(dg []byte, cidLen int) (recs []numberedRecord, ok bool) {
	for len(dg) > 0 {
		hl := 13
		if dg[0] == 25 {
			hl += cidLen
		}
		if len(dg) < hl {
			return recs, false
		}
		epoch := uint64(binary.BigEndian.Uint16(dg[3:5]))
		seq := uint64(binary.BigEndian.Uint16(dg[5:7]))<<32 | uint64(binary.BigEndian.Uint32(dg[7:11]))
		n := hl + int(binary.BigEndian.Uint16(dg[hl-2:hl]))
		if n > len(dg) {
			return recs, false
		}
		recs = append(recs, numberedRecord{[2]uint64{epoch, seq}, dg[:n]})
		dg = dg[n:]
	}
	return recs, true
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

// assertNoNonceReuse fails if two different records of a protected epoch
// in dgs carry the same sequence number. A byte-identical copy is not a
// reuse (same nonce, same plaintext: nothing is learnt): pion resends its
// tls12_cid Finished that way (the record as first sealed, sequence number
// included).
func assertNoNonceReuse(t *testing.T, dgs [][]byte, cidLen int) {
	t.Helper()
	type first struct {
		dg  int
		rec []byte
	}
	seen := map[[2]uint64]first{}
	for i, dg := range dgs {
		recs, ok := splitRecords(dg, cidLen)
		if !ok {
			t.Errorf("datagram %d does not parse: %x", i, dg[:min(len(dg), 32)])
		}
		for _, r := range recs {
			if r.num[0] == 0 {
				continue // unprotected
			}
			if f, dup := seen[r.num]; dup {
				if bytes.Equal(f.rec, r.rec) {
					continue
				}
				t.Fatalf("nonce reuse: epoch %d seq %d sealed twice (datagrams %d and %d):\n%x\n%x",
					r.num[0], r.num[1], f.dg, i, f.rec, r.rec)
			}
			seen[r.num] = first{i, r.rec}
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

// tinyGapNoBudget puts the Sealer only 3 above pion's sequence numbers and
// lifts the feed budget and its pacing until t ends, so that only the
// write guard stands between pion and a reused nonce.
func tinyGapNoBudget(t *testing.T) {
	g, b, fb, fr := seqGap, feedBudget, feedBurst, feedPerSecond
	t.Cleanup(func() { seqGap, feedBudget, feedBurst, feedPerSecond = g, b, fb, fr })
	seqGap, feedBudget, feedBurst, feedPerSecond = 3, 1<<30, 1e9, 1e9
}

// TestSpoofedHandshakeFloodTinyGap: with a Sealer only 3 above pion's
// sequence numbers and an unbounded feed budget, the write guard alone
// keeps pion from sealing a sequence number kvpn's Sealer uses.
func TestSpoofedHandshakeFloodTinyGap(t *testing.T) {
	tinyGapNoBudget(t)
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
	if p.feed.guarded.Load() == 0 {
		t.Errorf("pion never reached the Sealer's start: the test shows nothing")
	}
	t.Logf("write guard dropped %d datagrams of pion's", p.feed.guarded.Load())
}

// TestSeqExhaustedClosesChannel: a Sealer at the end of the epoch's 2^48
// sequence numbers (RFC 6347 section 4.1: they must not wrap) ends the
// DTLS channel on both sides, so the session falls back to TLS, and
// never seals a number twice.
func TestSeqExhaustedClosesChannel(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	pkts := randomPackets(rand.New(rand.NewPCG(33, 33)), 2)

	d := p.d.Load()
	sl, err := recordlayer.NewSealer(d.keys, recordlayer.MaxSeq)
	if err != nil {
		t.Fatal(err)
	}
	d.sealer = sl
	if err := p.WritePackets(withRoom(pkts), room); !errors.Is(err, recordlayer.ErrSeqExhausted) {
		t.Errorf("server WritePackets at MaxSeq: %v, want ErrSeqExhausted", err)
	}
	if p.Up() {
		t.Errorf("server peer still up after its sequence numbers ran out")
	}
	if err := p.WritePackets(withRoom(pkts), room); err == nil {
		t.Errorf("server WritePackets after exhaustion succeeded")
	}

	sl, err = recordlayer.NewSealer(c.d.keys, recordlayer.MaxSeq)
	if err != nil {
		t.Fatal(err)
	}
	c.d.sealer = sl
	if err := c.WritePackets(withRoom(pkts), room); !errors.Is(err, recordlayer.ErrSeqExhausted) {
		t.Errorf("client WritePackets at MaxSeq: %v, want ErrSeqExhausted", err)
	}
	if _, err := clientReadOnce(c, 100*time.Millisecond); err == nil || isTimeout(err) {
		t.Errorf("client channel still open after its sequence numbers ran out: ReadPackets %v", err)
	}
	if err := c.Ping(); err == nil {
		t.Errorf("client Ping after exhaustion succeeded")
	}
}

// TestSpoofedHandshakeFloodToClient: the same flood against the client
// (spoofed from the server's address), with a tiny gap and an unbounded
// budget, then with the real ones: no nonce is sealed twice by the
// client, and the client's answers stay within the budget.
func TestSpoofedHandshakeFloodToClient(t *testing.T) {
	for _, tiny := range []bool{true, false} {
		t.Run(map[bool]string{true: "tiny gap", false: "real gap"}[tiny], func(t *testing.T) {
			if tiny {
				tinyGapNoBudget(t)
			}
			s := newTestServer(t, false)
			r := newRelay(t, s.addr)
			c, _ := s.connect(t, r.Addr())
			r.setDrop(func(dg []byte) bool { return !isData(dg) }, nil)
			before := len(r.captured(true, 0))
			pkts := randomPackets(rand.New(rand.NewPCG(34, 34)), 4)
			for round := range 4 {
				for i := range 500 {
					r.InjectDown(spoofedHandshake(uint64(1000*round+i+10), []byte{2, 14, 20}[i%3]))
				}
				for range 5 {
					clientReadOnce(c, 5*time.Millisecond) // hands them to the client's pion
				}
				samePackets(t, "client to server", clientSend(t, s, c, pkts), pkts)
			}
			all := r.captured(true, 0)
			assertNoNonceReuse(t, all, 0)
			t.Logf("client sent %d datagrams after the handshake, fed-dropped %d", len(all)-before, c.Stats().FeedDropped.Load())
			if !tiny {
				back := 0
				for _, dg := range all[before:] {
					if !isData(dg) {
						back += len(dg)
					}
				}
				if back > 2048 {
					t.Errorf("amplification: the client sent %d bytes of handshake records in answer to a flood", back)
				}
				if c.Stats().FeedDropped.Load() == 0 {
					t.Errorf("Stats.FeedDropped = 0 after a flood")
				}
			}
		})
	}
}

// TestLostFinishedRecovered: the server's final flight (ChangeCipherSpec
// and Finished) is lost once. The client retransmits its own after a
// second and the server's pion, past the takeover but within its budget
// and window, answers: the channel comes up and carries data both ways.
func TestLostFinishedRecovered(t *testing.T) {
	for _, cid := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "cid"}[cid], func(t *testing.T) {
			s := newTestServer(t, false)
			s.cid.Store(cid)
			r := newRelay(t, s.addr)
			var dropped atomic.Bool
			r.setDrop(nil, func(dg []byte) bool {
				return len(dg) > 0 && dg[0] == 20 && dropped.CompareAndSwap(false, true)
			})
			c, p := s.connect(t, r.Addr())
			if !dropped.Load() {
				t.Fatal("the server's final flight was not dropped")
			}
			pkts := randomPackets(rand.New(rand.NewPCG(35, 35)), 4)
			samePackets(t, "client to server", clientSend(t, s, c, pkts), pkts)
			if err := p.WritePackets(withRoom(pkts), room); err != nil {
				t.Fatal(err)
			}
			samePackets(t, "server to client", clientRead(t, c, len(pkts)), pkts)
			assertNoNonceReuse(t, r.captured(false, 0), CIDLen)
		})
	}
}

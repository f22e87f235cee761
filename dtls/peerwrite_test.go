package dtls

import (
	"testing"

	"kvpn/internal/race"
)

// TestPeerWriteAllocs: a peer's write takes its message vector and writer
// from peerWrites and gives them back: nothing is allocated per batch once
// the pool holds one, and the peer keeps no vector of its own (the fields
// are gone; an idle session held its largest burst's before).
func TestPeerWriteAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race")
		return
	}
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	_ = c
	bufs := pumpPackets()[:8]
	if err := p.WritePackets(bufs, room); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(100, func() {
		renew(bufs)
		if err := p.WritePackets(bufs, room); err != nil {
			t.Fatal(err)
		}
	})
	if n > 0 {
		t.Fatalf("%v allocations per WritePackets", n)
	}
}

// TestWindowDropsPion: once the feed window ends, pion's Conn is closed
// and no longer referenced (it stayed with the peer for the session's
// life, some 10 KiB each); the peer still carries data and closes.
func TestWindowDropsPion(t *testing.T) {
	s := newTestServer(t, false)
	c, p := s.connect(t, s.addr)
	p.feed.endWindow()
	p.feed.mu.Lock()
	pion := p.feed.pion
	p.feed.mu.Unlock()
	if pion != nil {
		t.Fatal("pion's Conn still referenced after the feed window")
	}
	bufs := pumpPackets()[:4]
	if err := p.WritePackets(bufs, room); err != nil {
		t.Fatal(err)
	}
	if got := clientRead(t, c, len(bufs)); len(got) != len(bufs) {
		t.Fatalf("%d packets after the window, want %d", len(got), len(bufs))
	}
	p.Close()
}

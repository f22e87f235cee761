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

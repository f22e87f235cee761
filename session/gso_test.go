package session

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// TestGSOFramesKeepOrder interleaves DATA packets and GSO-DATA frames: the
// receiver sees them in the order sent, GSO frames through the AcceptGSO
// callback (one is held while earlier packets are delivered), and a 40 KiB
// frame crosses several TLS records.
func TestGSOFramesKeepOrder(t *testing.T) {
	a, b := channelPair(t, 1500)
	var got []string
	b.AcceptGSO(func(frame []byte) error {
		got = append(got, fmt.Sprintf("gso:%d:%x", len(frame), frame[len(frame)-1]))
		return nil
	})
	var want []string
	werr := make(chan error, 1)
	go func() {
		for round := range 4 {
			pkts := packets(3, 100+round)
			for _, p := range pkts {
				want = append(want, fmt.Sprintf("data:%d", len(p)-headroom))
			}
			if err := a.WritePackets(pkts, headroom); err != nil {
				werr <- err
				return
			}
			// A burst: two small frames, a 40 KiB one, another small one.
			var frames [][]byte
			for _, size := range []int{60, 70, 40 << 10, 80} {
				frames = append(frames, bytes.Repeat([]byte{byte(round)}, headroom+size+32)[:headroom+size])
				want = append(want, fmt.Sprintf("gso:%d:%x", size, round))
			}
			if err := a.WriteGSOBatch(frames, headroom); err != nil {
				werr <- err
				return
			}
		}
		// A last packet: ReadPackets returns once it has packets, so the
		// loop below ends after it.
		want = append(want, "data:50")
		werr <- a.WritePackets(packets(1, 50), headroom)
	}()
	bufs, sizes := recvBufs(64)
	for len(got) < 29 {
		n, err := b.ReadPackets(bufs, sizes, headroom)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, fmt.Sprintf("data:%d", sizes[i]))
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("received\n%v\nwant\n%v", got, want)
	}
}

// TestGSOFrameNotNegotiated: a GSO-DATA frame to a channel that did not
// accept the extension is a protocol violation.
func TestGSOFrameNotNegotiated(t *testing.T) {
	a, b := channelPair(t, 1500)
	go a.WriteGSOBatch([][]byte{make([]byte, headroom+100, headroom+200)}, headroom)
	bufs, sizes := recvBufs(4)
	_, err := b.ReadPackets(bufs, sizes, headroom)
	var perr *ProtocolError
	if !errors.As(err, &perr) {
		t.Fatalf("ReadPackets = %v, want a ProtocolError", err)
	}
}

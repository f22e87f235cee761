package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"kvpn/internal/race"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/record"
	"kvpn/record/recordtest"
)

const headroom = 32

func channelPair(t testing.TB, mtu int) (*CSTPChannel, *CSTPChannel) {
	t.Helper()
	c, s := recordtest.Pair(t, 0)
	cc, err := NewCSTPChannel(c, NewFrameReader(c), mtu)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := NewCSTPChannel(s, NewFrameReader(s), mtu)
	if err != nil {
		t.Fatal(err)
	}
	return cc, sc
}

// packets returns n packets of size bytes behind headroom, each with the
// spare capacity the record layer seals its tag into (record.Tailroom), as
// vpnd's and vpnc's buffers have.
func packets(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		b := make([]byte, headroom+size, headroom+size+record.Tailroom)
		b[headroom] = 0x45
		for j := headroom + 1; j < len(b); j++ {
			b[j] = byte(i + j)
		}
		bufs[i] = b
	}
	return bufs
}

func recvBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+2000)
	}
	return bufs, make([]int, n)
}

func TestChannelCarriesBatches(t *testing.T) {
	a, b := channelPair(t, 1500)
	sent := packets(40, 1400)
	want := make([][]byte, len(sent))
	for i, p := range sent {
		want[i] = bytes.Clone(p[headroom:])
	}
	werr := make(chan error, 1)
	go func() { werr <- a.WritePackets(sent, headroom) }()
	bufs, sizes := recvBufs(16)
	got := 0
	for got < len(want) {
		n, err := b.ReadPackets(bufs, sizes, headroom)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if !bytes.Equal(bufs[i][headroom:headroom+sizes[i]], want[got]) {
				t.Fatalf("packet %d corrupted", got)
			}
			got++
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if a.Stats.TxPackets.Load() != 40 || b.Stats.RxPackets.Load() != 40 {
		t.Fatalf("stats tx=%d rx=%d", a.Stats.TxPackets.Load(), b.Stats.RxPackets.Load())
	}
}

// TestDPDIsAnswered: a DPD request is echoed by the reading side, and the
// answer refreshes the requester's LastReceive.
func TestDPDIsAnswered(t *testing.T) {
	a, b := channelPair(t, 1500)
	bufs, sizes := recvBufs(4)
	go b.ReadPackets(bufs, sizes, headroom) // handles the DPD-REQ inside
	before := a.LastReceive()
	time.Sleep(5 * time.Millisecond)
	if err := a.Ping(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.ReadPackets(bufs[2:], sizes[2:], headroom)
		errc <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !a.LastReceive().After(before) {
		if time.Now().After(deadline) {
			t.Fatal("no DPD response")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDisconnectEndsPeer(t *testing.T) {
	a, b := channelPair(t, 1500)
	go a.Disconnect("user logout")
	bufs, sizes := recvBufs(4)
	_, err := b.ReadPackets(bufs, sizes, headroom)
	var pc *PeerClosedError
	if !errors.As(err, &pc) || pc.Terminate || pc.Reason != "user logout" {
		t.Fatalf("got %v", err)
	}
}

// TestProtocolViolations: each malformed input ends the channel with a
// ProtocolError, and the error stays (the stream cannot resynchronise).
func TestProtocolViolations(t *testing.T) {
	big := cstp.AppendFrame(nil, cstp.TypeData, make([]byte, 1501))
	for name, raw := range map[string][]byte{
		"bad magic":    []byte("XTF\x01\x00\x00\x00\x00"),
		"bad version":  []byte("STF\x02\x00\x00\x00\x00"),
		"reserved":     []byte("STF\x01\x00\x00\x00\x01"),
		"over MTU":     big,
		"unknown type": cstp.AppendFrame(nil, 0x42, nil),
		"compressed":   cstp.AppendFrame(nil, cstp.TypeCompressed, []byte{1}),
	} {
		t.Run(name, func(t *testing.T) {
			c, s := recordtest.Pair(t, 0)
			ch, err := NewCSTPChannel(s, NewFrameReader(s), 1500)
			if err != nil {
				t.Fatal(err)
			}
			go c.Write(raw)
			bufs, sizes := recvBufs(4)
			_, err = ch.ReadPackets(bufs, sizes, headroom)
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want ProtocolError", err)
			}
			if _, err2 := ch.ReadPackets(bufs, sizes, headroom); err2 != err {
				t.Fatalf("error not sticky: %v then %v", err, err2)
			}
		})
	}
}

// TestUplinkChecksAndDrops runs the uplink loop into a recording writer.
func TestUplinkChecksAndDrops(t *testing.T) {
	a, b := channelPair(t, 1500)
	sent := packets(10, 100)
	for i := range sent {
		sent[i][headroom+1] = byte(i) // marker
	}
	w := &recorder{}
	done := make(chan error, 1)
	go func() {
		bufs, _ := recvBufs(8)
		done <- Uplink(b, w, bufs, headroom, func(p []byte) (bool, error) { return p[1]%2 == 0, nil })
	}()
	if err := a.WritePackets(sent, headroom); err != nil {
		t.Fatal(err)
	}
	a.Disconnect("bye")
	err := <-done
	var pc *PeerClosedError
	if !errors.As(err, &pc) {
		t.Fatalf("uplink ended with %v", err)
	}
	if len(w.pkts) != 5 {
		t.Fatalf("%d packets passed, want the 5 even ones", len(w.pkts))
	}
	for _, p := range w.pkts {
		if p[1]%2 != 0 {
			t.Fatalf("odd packet %d passed", p[1])
		}
	}
}

type recorder struct{ pkts [][]byte }

func (r *recorder) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		r.pkts = append(r.pkts, bytes.Clone(b[offset:]))
	}
	return len(bufs), nil
}

// TestKeepAliveDetectsDeadPeer: a peer that never answers is declared dead
// after 2 x DPD, having been sent DPD requests.
func TestKeepAliveDetectsDeadPeer(t *testing.T) {
	a, _ := channelPair(t, 1500) // nobody reads on the other side
	const dpd = 200 * time.Millisecond
	err := KeepAlive(context.Background(), a, Liveness{DPD: dpd})
	if !errors.Is(err, ErrDeadPeer) {
		t.Fatalf("got %v", err)
	}
	// Declared dead no earlier than 2 x DPD after the last receive (the
	// channel's creation); how much later is the scheduler's business.
	if silent := time.Since(a.LastReceive()); silent < 2*dpd {
		t.Fatalf("declared dead after %s of silence, want at least 2 x DPD (%s)", silent, 2*dpd)
	}
}

// TestWritePacketsNoAlloc: the transmit path allocates nothing per batch.
func TestWritePacketsNoAlloc(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	c, raw := recordtest.PairRaw(t)
	a, err := NewCSTPChannel(c, NewFrameReader(c), 1500)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, raw)
	pkts := packets(32, 1400)
	a.WritePackets(pkts, headroom) // warm up buffers
	if n := testing.AllocsPerRun(200, func() { a.WritePackets(pkts, headroom) }); n > 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

// TestReadPacketsAllocs: the receive path allocates nothing per packet.
// The channels run over ktlsbridge's userspace engine, as in vpnd and vpnc
// with kernel TLS off (crypto/tls's reader would allocate one small object
// per socket read: its atLeastReader escapes in readFromUntil).
func TestReadPacketsAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	a, b := channelPair(t, 1500)
	pkts := packets(32, 1400)
	const batches = 400 // more than AllocsPerRun's 201 reads can consume
	go func() {
		for range batches {
			if a.WritePackets(pkts, headroom) != nil {
				return
			}
		}
	}()
	bufs, sizes := recvBufs(32)
	var got int
	defer func() {
		// Drain, so the writer is not blocked when the conns close.
		for got < batches*32 {
			k, err := b.ReadPackets(bufs, sizes, headroom)
			if err != nil {
				return
			}
			got += k
		}
	}()
	n := testing.AllocsPerRun(200, func() {
		k, _ := b.ReadPackets(bufs, sizes, headroom)
		got += k
	})
	if perPacket := n * 201 / float64(got); perPacket > 0.25 {
		t.Fatalf("%.2f allocations per packet (%v per batch)", perPacket, n)
	}
}

func BenchmarkChannel(b *testing.B) {
	a, r := channelPair(b, 1500)
	pkts := packets(64, 1400)
	go func() {
		bufs, sizes := recvBufs(64)
		for {
			if _, err := r.ReadPackets(bufs, sizes, headroom); err != nil {
				return
			}
		}
	}()
	b.SetBytes(64 * 1400)
	b.ReportAllocs()
	for b.Loop() {
		if err := a.WritePackets(pkts, headroom); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteTimeoutEndsStalledWrite: a peer that never reads fills the
// TCP buffers; the next write blocks, and with a write timeout it fails
// with ErrWriteStalled within the bound instead of blocking for ever.
// Control frames (DPD, keepalive) are bounded the same way.
func TestWriteTimeoutEndsStalledWrite(t *testing.T) {
	a, _ := channelPair(t, 1500) // nobody reads on the other side
	const d = 400 * time.Millisecond
	a.SetWriteTimeout(d)
	pkts := packets(64, 1400)
	done := make(chan error, 1)
	go func() {
		for {
			if err := a.WritePackets(pkts, headroom); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrWriteStalled) {
			t.Fatalf("stalled write: %v, want ErrWriteStalled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a write to a peer that never reads blocked past the write timeout")
	}
	start := time.Now()
	a.Ping() // the stream is broken; what matters is that it returns
	if took := time.Since(start); took > 2*d {
		t.Fatalf("control frame took %s", took)
	}
}

// TestWritePacketsNoAllocWithTimeout: the write deadline costs no
// allocation per batch.
func TestWritePacketsNoAllocWithTimeout(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race")
		return
	}
	c, raw := recordtest.PairRaw(t)
	a, err := NewCSTPChannel(c, NewFrameReader(c), 1500)
	if err != nil {
		t.Fatal(err)
	}
	a.SetWriteTimeout(30 * time.Second)
	go io.Copy(io.Discard, raw)
	pkts := packets(32, 1400)
	a.WritePackets(pkts, headroom)
	if n := testing.AllocsPerRun(200, func() { a.WritePackets(pkts, headroom) }); n > 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

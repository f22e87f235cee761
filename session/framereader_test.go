package session

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/internal/race"
)

// TestChannelReleasesFrameBuffer: the channel's frame buffer is pooled and
// held only while it holds unread bytes: none after a burst is read, one
// while a frame has arrived in part.
func TestChannelReleasesFrameBuffer(t *testing.T) {
	a, b := channelPair(t, 1500)
	pkts := packets(40, 1400)
	if err := a.WritePackets(pkts, headroom); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := recvBufs(64)
	for got := 0; got < len(pkts); {
		if err := b.WaitRead(); err != nil {
			t.Fatal(err)
		}
		n, err := b.ReadPackets(bufs, sizes, headroom)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	b.WaitReadRelease() // the last frame, which the next WaitRead drops
	if b.WaitReadBufferHeld() {
		t.Fatal("frame buffer still held after every frame was read")
	}
	// Half a frame: WaitRead keeps waiting, holding one buffer.
	frame := cstp.AppendFrame(nil, cstp.TypeKeepalive, nil)
	if _, err := a.Conn().Write(frame[:3]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WaitRead() }()
	select {
	case err := <-done:
		t.Fatalf("WaitRead returned on half a frame: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := a.Conn().Write(frame[3:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !b.WaitReadBufferHeld() {
		t.Fatal("no buffer holds the frame WaitRead found")
	}
	if n, err := b.ReadPackets(bufs, sizes, headroom); n != 0 || err != nil {
		t.Fatalf("keepalive: %d packets, %v", n, err)
	}
	b.WaitReadRelease()
	if b.WaitReadBufferHeld() {
		t.Fatal("frame buffer held after the keepalive was read")
	}
}

// TestWaitReadHoldsNothingWhileIdle: a silent connection's WaitRead
// blocks on the socket without a buffer, and returns when data comes.
func TestWaitReadHoldsNothingWhileIdle(t *testing.T) {
	a, b := channelPair(t, 1500)
	out := frameBufsOut.Load()
	done := make(chan error, 1)
	go func() { done <- b.WaitRead() }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("WaitRead returned on a silent connection: %v", err)
	default:
	}
	if n := frameBufsOut.Load() - out; n != 0 {
		t.Fatalf("a silent connection's WaitRead holds %d frame buffers", n)
	}
	if err := a.Keepalive(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRead did not return when a frame arrived")
	}
	// Closing the channel ends a waiting WaitRead.
	bufs, sizes := recvBufs(1)
	if n, err := b.ReadPackets(bufs, sizes, headroom); n != 0 || err != nil {
		t.Fatalf("keepalive: %d packets, %v", n, err)
	}
	go func() { done <- b.WaitRead() }()
	time.Sleep(20 * time.Millisecond)
	b.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRead did not return after Close")
	}
}

type discardDev struct{}

func (discardDev) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// TestUplinkPooledAllocs: waiting, taking the pooled batch, reading,
// writing and giving it back allocates nothing per batch.
func TestUplinkPooledAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race")
		return
	}
	a, b := channelPair(t, 1500)
	pkts := packets(32, 1400)
	const batches = 400
	go func() {
		for range batches {
			if a.WritePackets(pkts, headroom) != nil {
				return
			}
		}
	}()
	pool := NewBatchPool(func() [][]byte { bufs, _ := recvBufs(32); return bufs })
	got := 0
	defer func() {
		for got < batches*32 {
			k, err := b.ReadPackets(pool.Get().Bufs, make([]int, 32), headroom)
			if err != nil {
				return
			}
			got += k
		}
	}()
	pool.Put(pool.Get()) // the pool's first batch is made outside the count
	var tr Traffic
	n := testing.AllocsPerRun(200, func() {
		if err := b.WaitRead(); err != nil {
			t.Fatal(err)
		}
		bt := pool.Get()
		uplinkOnce(b, discardDev{}, bt.Bufs, bt.sizes, &bt.out, headroom, nil, &tr)
		pool.Put(bt)
	})
	got = int(tr.InPackets.Load())
	if perPacket := n * 201 / float64(got); perPacket > 0.25 {
		t.Fatalf("%.2f allocations per packet (%v per batch)", perPacket, n)
	}
}

// FuzzFrameReader: over any byte stream, cut into reads of any sizes,
// frameReader returns the frames and errors refReader returns.
func FuzzFrameReader(f *testing.F) {
	f.Add(append(cstp.AppendFrame(nil, cstp.TypeData, []byte{0x45, 1, 2}), cstp.AppendFrame(nil, cstp.TypeKeepalive, nil)...), []byte{1, 7, 3})
	f.Add(cstp.AppendFrame(nil, cstp.TypeData, make([]byte, 3000)), []byte{200})
	f.Add([]byte("STF\x01\xff\xff\x00\x00"), []byte{})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		want := &refReader{r: bytes.NewReader(stream), maxPayload: 2000}
		got := newFrameReader(&choppy{b: stream, cuts: cuts}, 2000, nil)
		for i := 0; ; i++ {
			wt, wp, werr := want.Next()
			gt, gp, gerr := got.Next()
			if (werr == nil) != (gerr == nil) || werr != nil && !sameErr(werr, gerr) {
				t.Fatalf("frame %d: error %v, want %v", i, gerr, werr)
			}
			if werr != nil {
				if got.buf != nil && errors.Is(werr, io.EOF) {
					t.Fatal("buffer held at the end of the stream")
				}
				return
			}
			if gt != wt || !bytes.Equal(gp, wp) {
				t.Fatalf("frame %d: %v %x, want %v %x", i, gt, gp, wt, wp)
			}
		}
	})
}

// refReader is the reference FuzzFrameReader holds frameReader to: one
// frame at a time with io.ReadFull, nothing pooled or buffered.
type refReader struct {
	r          io.Reader
	maxPayload int
}

func (r *refReader) Next() (cstp.FrameType, []byte, error) {
	var hdr [cstp.HeaderLen]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return 0, nil, err // io.EOF between frames, io.ErrUnexpectedEOF inside one
	}
	t, n, err := cstp.ParseHeader(hdr[:])
	if err != nil {
		return 0, nil, err
	}
	if n > r.maxPayload {
		return 0, nil, cstp.ErrFrameTooLong
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return t, p, nil
}

func sameErr(a, b error) bool {
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, cstp.ErrBadMagic, cstp.ErrBadVersion, cstp.ErrBadReserved, cstp.ErrFrameTooLong} {
		if errors.Is(a, e) != errors.Is(b, e) {
			return false
		}
	}
	return true
}

// choppy returns b in reads of the sizes cuts names (1..256, then all).
type choppy struct {
	b    []byte
	cuts []byte
}

func (c *choppy) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := len(c.b)
	if len(c.cuts) > 0 {
		n = min(n, int(c.cuts[0])+1)
		c.cuts = c.cuts[1:]
	}
	n = copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// TestLargeDPDNotKept: the echo of a 60000-byte DPD request is sent, and
// its buffer is not kept for the channel's life.
func TestLargeDPDNotKept(t *testing.T) {
	a, b := channelPair(t, 1500)
	if _, err := a.Conn().Write(cstp.AppendFrame(nil, cstp.TypeDPDReq, make([]byte, 60000))); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := recvBufs(1)
	if err := b.WaitRead(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadPackets(bufs, sizes, headroom); err != nil {
		t.Fatal(err)
	}
	b.cmu.Lock()
	kept := cap(b.ctrl)
	b.cmu.Unlock()
	if kept > ctrlKeep {
		t.Fatalf("channel keeps a %d-byte control buffer", kept)
	}
	// The echo arrived whole.
	done := make(chan error, 1)
	go func() {
		_, err := a.ReadPackets(bufs, sizes, headroom)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DPD response")
	}
}

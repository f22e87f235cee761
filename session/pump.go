package session

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// PacketWriter is the side of a TUN device the uplink writes to.
type PacketWriter interface {
	Write(bufs [][]byte, offset int) (int, error)
}

// Check inspects one packet from the peer before it reaches the TUN device.
// It returns keep=false to drop the packet (the caller counts why), or an
// error to end the session (a protocol violation).
type Check func(pkt []byte) (keep bool, err error)

// Uplink moves packets from the peer to the TUN device until the channel
// fails, and returns that error. bufs are the receive buffers (each with
// headroom offset and room for the largest packet); check may be nil.
//
// This is the receive hot loop: it allocates nothing per packet. out is a
// reused vector of views into bufs, holding only the packets that passed.
func Uplink(ch Link, dev PacketWriter, bufs [][]byte, offset int, check Check) error {
	return UplinkCounted(ch, dev, bufs, offset, check, nil)
}

// Traffic counts what a session moved: packets and bytes (IP packet
// lengths, without any framing) in each direction. "In" is from the peer,
// "out" is to the peer. The pumps add once per batch, not per packet.
type Traffic struct {
	InPackets, InBytes   atomic.Uint64
	OutPackets, OutBytes atomic.Uint64
}

// AddIn counts a batch received from the peer.
func (t *Traffic) AddIn(pkts, bytes int) {
	t.InPackets.Add(uint64(pkts))
	t.InBytes.Add(uint64(bytes))
}

// AddOut counts a batch sent to the peer.
func (t *Traffic) AddOut(pkts, bytes int) {
	t.OutPackets.Add(uint64(pkts))
	t.OutBytes.Add(uint64(bytes))
}

// UplinkCounted is Uplink that also counts, per batch, the packets that
// passed check into t (nil: no counting).
func UplinkCounted(ch Link, dev PacketWriter, bufs [][]byte, offset int, check Check, t *Traffic) error {
	sizes := make([]int, len(bufs))
	out := make([][]byte, 0, len(bufs))
	for {
		if err := uplinkOnce(ch, dev, bufs, sizes, &out, offset, check, t); err != nil {
			return err
		}
	}
}

// Liveness holds a channel's dead-peer-detection and keepalive intervals;
// zero disables either.
type Liveness struct {
	DPD       time.Duration
	Keepalive time.Duration
}

// KeepAlive watches ch until ctx ends (nil) or the peer is dead
// (ErrDeadPeer). Like openconnect: a DPD request after DPD of silence,
// repeated every DPD/2, and the peer declared dead after 2 x DPD of
// silence; a keepalive after Keepalive without sending anything.
//
// It sleeps until the earliest moment one of those can fall due, as
// openconnect's keepalive_action computes it, rather than polling: a
// server watches two channels per session, and 20k loops polling once a
// second cost 3 % of a core doing nothing (BenchmarkKeepAliveIdle). Traffic
// moves the deadlines later; the loop then wakes early, finds nothing due
// and sleeps again.
func KeepAlive(ctx context.Context, ch Keepable, l Liveness) error {
	if l.DPD <= 0 && l.Keepalive <= 0 {
		<-ctx.Done()
		return nil
	}
	w := NewWatch(ch, l)
	t := time.NewTimer(l.MinWait())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		next, err := w.Check(now)
		if err != nil {
			return err
		}
		t.Reset(l.Wait(now, next))
	}
}

// MinWait is the shortest sleep between two looks at a channel, even
// when a deadline has passed (a channel whose LastSend lags its
// Keepalive): a quarter of the shorter interval, at most a second.
func (l Liveness) MinWait() time.Duration {
	w := time.Second
	for _, d := range []time.Duration{l.DPD / 4, l.Keepalive / 4} {
		if d > 0 && d < w {
			w = d
		}
	}
	return w
}

// Wait is how long to sleep at now until next, what Check returned.
func (l Liveness) Wait(now, next time.Time) time.Duration {
	if next.IsZero() {
		return time.Hour // nothing to watch (no DPD, no keepalive)
	}
	return max(next.Sub(now), l.MinWait())
}

// Watch is KeepAlive's state for one channel, for a caller that watches
// several channels of a session from one goroutine (vpnd: TLS and DTLS),
// saving a goroutine stack per channel.
type Watch struct {
	ch       Keepable
	l        Liveness
	lastPing time.Time
}

// NewWatch starts watching ch.
func NewWatch(ch Keepable, l Liveness) Watch { return Watch{ch: ch, l: l} }

// Check looks at the channel at now: it sends what is due and returns
// when to look again (zero: never), or ErrDeadPeer, or the error of a
// send.
func (w *Watch) Check(now time.Time) (next time.Time, err error) {
	due := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if w.l.DPD > 0 {
		recv := w.ch.LastReceive()
		idle := now.Sub(recv)
		if idle >= 2*w.l.DPD {
			return time.Time{}, ErrDeadPeer
		}
		if idle >= w.l.DPD && now.Sub(w.lastPing) >= w.l.DPD/2 {
			w.lastPing = now
			if err := w.ch.Ping(); err != nil {
				return time.Time{}, err
			}
		}
		due(recv.Add(2 * w.l.DPD))
		ping := recv.Add(w.l.DPD)
		if again := w.lastPing.Add(w.l.DPD / 2); again.After(ping) {
			ping = again
		}
		due(ping)
	}
	if w.l.Keepalive > 0 {
		if now.Sub(w.ch.LastSend()) >= w.l.Keepalive {
			if err := w.ch.Keepalive(); err != nil {
				return time.Time{}, err
			}
		}
		due(w.ch.LastSend().Add(w.l.Keepalive))
	}
	return next, nil
}

// Batch is one uplink batch: packet buffers with the vectors that go with
// them, taken from a BatchPool for one read and write.
type Batch struct {
	Bufs  [][]byte
	sizes []int
	out   [][]byte
}

// BatchPool hands out uplink batches shared by all sessions: a session
// holds one only while packets are in flight from its channel to the TUN
// device, not for its lifetime (one batch is 64 x 64 KiB in vpnd).
type BatchPool struct {
	p sync.Pool // *Batch, pointers so that Get and Put do not allocate
}

// NewBatchPool returns a pool whose batches get their buffers from newBufs
// (tun.NewBuffers: the offload TUN writer may append coalesced segments up
// to each buffer's capacity, so the buffers must be its size).
func NewBatchPool(newBufs func() [][]byte) *BatchPool {
	bp := &BatchPool{}
	bp.p.New = func() any {
		bufs := newBufs()
		return &Batch{Bufs: bufs, sizes: make([]int, len(bufs)), out: make([][]byte, 0, len(bufs))}
	}
	return bp
}

// Get takes a batch from the pool.
func (bp *BatchPool) Get() *Batch { return bp.p.Get().(*Batch) }

// Put returns b; nothing may refer to its buffers any more.
func (bp *BatchPool) Put(b *Batch) {
	clear(b.out[:cap(b.out)])
	b.out = b.out[:0]
	bp.p.Put(b)
}

// WaitReader is a channel that can wait for input without holding receive
// buffers (CSTPChannel.WaitRead).
type WaitReader interface {
	WaitRead() error
}

// UplinkPooled is UplinkCounted with its buffers taken from pool for each
// batch: it waits for the channel's input first (WaitReader, when ch is
// one), then takes a batch, reads what is buffered, writes it to the TUN
// device and gives the batch back. The TUN write is synchronous (the
// device copies or has sent the packets when Write returns), so the
// buffers are free again after it.
func UplinkPooled(ch Link, dev PacketWriter, pool *BatchPool, offset int, check Check, t *Traffic) error {
	wr, _ := ch.(WaitReader)
	for {
		if wr != nil {
			if err := wr.WaitRead(); err != nil {
				return err
			}
		}
		b := pool.Get()
		err := uplinkOnce(ch, dev, b.Bufs, b.sizes, &b.out, offset, check, t)
		pool.Put(b)
		if err != nil {
			return err
		}
	}
}

// uplinkOnce moves one batch from ch to dev; out is the reused vector of
// the packets that passed check.
func uplinkOnce(ch Link, dev PacketWriter, bufs [][]byte, sizes []int, out *[][]byte, offset int, check Check, t *Traffic) error {
	n, err := ch.ReadPackets(bufs, sizes, offset)
	if err != nil {
		return err
	}
	o := (*out)[:0]
	bytes := 0
	for i := 0; i < n; i++ {
		pkt := bufs[i][:offset+sizes[i]]
		if check != nil {
			keep, err := check(pkt[offset:])
			if err != nil {
				return err
			}
			if !keep {
				continue
			}
		}
		o = append(o, pkt)
		bytes += sizes[i]
	}
	*out = o
	if len(o) == 0 {
		return nil
	}
	if t != nil {
		t.AddIn(len(o), bytes)
	}
	// A TUN write error concerns one packet the kernel refused (for
	// example a bad checksum); it is no reason to end the session.
	dev.Write(o, offset)
	return nil
}

package dtls

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/dtls/recordlayer"
)

// feedConn is the net.PacketConn pion sees. kvpn owns the real UDP socket:
// its reader hands pion the datagrams that belong to the handshake (Feed),
// and pion's writes go out through send. This is how one socket serves
// every session on the server, and how the client keeps reading data
// records itself after the handshake while pion stays alive to answer a
// retransmitted final flight.
type feedConn struct {
	local, remote net.Addr
	send          func([]byte) error
	in            chan []byte

	// takenOver is set once kvpn's record layer owns the keys. From then
	// on pion may only retransmit its final flight (handshake and
	// ChangeCipherSpec records); anything else it would send, such as an
	// alert provoked by a forged datagram, would be sealed with the
	// session keys under pion's own sequence numbers, so it is dropped.
	takenOver atomic.Bool

	// After the takeover pion seals its retransmitted Finished under the
	// data key with its own sequence numbers, and it resends its last
	// flight for every handshake record it is fed (RFC 6347 section
	// 4.2.4), which anyone can spoof from the peer's address. So pion is
	// fed at most feedBudget datagrams, within feedWindow of the takeover
	// and only until the peer's first authenticated data record (which
	// proves it has our Finished); then its Conn is closed. Independently
	// of that budget, WriteTo drops any datagram holding a record of the
	// data epoch numbered at or above guardLimit, the Sealer's first
	// sequence number: the two sequence spaces cannot meet.
	fed        atomic.Int64 // datagrams fed since the handshake completed
	guarded    atomic.Int64 // datagrams of pion's that WriteTo dropped
	windowOver atomic.Bool
	windowEnd  atomic.Int64 // unix nanoseconds
	timer      *time.Timer
	guardEpoch uint16
	guardLimit uint64
	guardCID   int            // length of the CID in pion's tls12_cid records
	onDrop     func(n uint64) // counts (and logs) what the window refused
	pion       io.Closer      // closed when the window ends
	feedTokens float64        // pacing of fed datagrams, under mu
	feedLast   time.Time
	pionOnce   sync.Once

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed and replaced when the deadline changes
	closed   chan struct{}
	once     sync.Once
}

const contentChangeCipherSpec = 20

// handshakeDone is called as soon as pion's handshake returns, before its
// state (and sequence number) is exported: from then on the feed budget
// counts, and until takeOver installs the real write guard everything pion
// writes is dropped (its final flight has left; only a retransmission
// could follow). So no record pion numbers after the export escapes the
// guard.
func (c *feedConn) handshakeDone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.takenOver.Load() {
		return
	}
	// Epoch 0, limit 0: allowed refuses every record.
	c.guardEpoch, c.guardLimit = 0, 0
	c.feedTokens, c.feedLast = feedBurst, time.Now()
	c.windowEnd.Store(time.Now().Add(feedWindow).UnixNano())
	c.takenOver.Store(true)
}

// takeOver marks the handshake done and keeps pion's Conn from wedging:
// pion queues every record it decrypts (and every read error) for its
// Read, in a channel of one, and its read loop (which also answers
// retransmissions) blocks until someone reads. Nobody uses pion for data
// after the takeover, so a goroutine drains it until the feed closes.
//
// g is the write guard: pion's records of the data epoch must stay below
// g.limit (the Sealer's start). onDrop is called for every datagram the
// feed refuses from then on.
func (c *feedConn) takeOver(pion interface {
	Read([]byte) (int, error)
	io.Closer
}, g writeGuard, onDrop func(n uint64)) {
	c.handshakeDone()
	c.mu.Lock()
	c.guardEpoch, c.guardLimit, c.guardCID = g.epoch, g.limit, g.cidLen
	c.onDrop = onDrop
	c.pion = pion
	c.timer = time.AfterFunc(feedWindow, c.endWindow)
	c.mu.Unlock()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := pion.Read(buf); err != nil {
				if errors.Is(err, io.EOF) {
					return // pion's Conn is closed (see closePion)
				}
				// Other errors repeat: pace the loop.
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
}

// closePion closes the feed, then pion's Conn, which ends pion's
// goroutines. Safe after takeOver: the close_notify pion would send under
// its own sequence numbers is dropped by WriteTo.
func (c *feedConn) closePion(pion io.Closer) {
	c.Close()
	if pion != nil {
		c.pionOnce.Do(func() { go pion.Close() })
	}
}

// writeGuard says which of pion's records WriteTo lets through after the
// takeover.
type writeGuard struct {
	epoch  uint16 // the data epoch
	limit  uint64 // the Sealer's first sequence number
	cidLen int    // length of the CID pion writes in tls12_cid records
}

// guardFor is the write guard for a datapath.
func guardFor(d *datapath) writeGuard {
	return writeGuard{epoch: d.keys.Epoch, limit: d.sealer.Next(), cidLen: len(d.keys.LocalCID)}
}

// endWindow ends pion's part: nothing more is fed to it, and its Conn is
// closed (its close_notify is dropped, the feed being closed first). Called
// on the peer's first authenticated data record, when feedWindow has
// passed, or when the budget is used up.
func (c *feedConn) endWindow() {
	if !c.windowOver.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	pion, t := c.pion, c.timer
	c.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	c.closePion(pion)
	// Closed, pion's Conn (its handshake cache, cipher state and
	// buffers, some 10 KiB) is garbage: keep no reference for the
	// session's lifetime.
	c.mu.Lock()
	c.pion, c.timer = nil, nil
	c.mu.Unlock()
}

// closeAll closes the feed and, if the handshake handed it over and the
// window has not dropped it yet, pion's Conn (Peer.Close).
func (c *feedConn) closeAll() {
	c.mu.Lock()
	pion := c.pion
	c.mu.Unlock()
	c.closePion(pion)
}

// peerAuthenticated is called for every authenticated record from the
// peer: the first one ends the window.
func (c *feedConn) peerAuthenticated() {
	if !c.windowOver.Load() {
		c.endWindow()
	}
}

// feedQueue bounds the datagrams waiting for pion; handshake traffic is a
// handful of datagrams, anything beyond is a flood and is dropped.
const feedQueue = 32

// feedBudget is how many datagrams pion may be fed after the takeover
// (each may make it resend its last flight once), feedWindow how long
// after the takeover. A peer that lost our Finished retransmits its own
// final flight after 1 s, then 2 s more (RFC 6347 section 4.2.4.1): two
// retransmissions fit the window. Variables for tests.
var (
	feedBudget int64 = 8
	feedWindow       = 5 * time.Second
)

// feedBurst and feedPerSecond pace the datagrams fed to pion after the
// takeover: 2 at once (a flight's ChangeCipherSpec and Finished may come
// in two datagrams), then 4 per second. Variables for tests.
var (
	feedBurst     = 2.0
	feedPerSecond = 4.0
)

// maxRecordsPerFlight bounds the records of the data epoch in one flight
// pion resends after the takeover: its final flight is ChangeCipherSpec
// (epoch 0) and Finished (one record of the data epoch); 4 leaves room.
const maxRecordsPerFlight = 4

// The budget cannot carry pion's sequence numbers into the Sealer's (which
// the write guard enforces anyway): the constant is negative, and the
// build fails, if it could.
const _ = uint64(recordlayer.SeqGap - 8*maxRecordsPerFlight - 1)

func newFeedConn(local, remote net.Addr, send func([]byte) error) *feedConn {
	return &feedConn{
		local: local, remote: remote, send: send,
		in: make(chan []byte, feedQueue), wake: make(chan struct{}), closed: make(chan struct{}),
	}
}

// Feed queues a copy of a datagram for pion; false if the queue is full
// or, after the takeover, the window is over or its budget used up.
func (c *feedConn) Feed(b []byte) bool {
	if c.takenOver.Load() {
		now := time.Now()
		over := c.windowOver.Load() || now.UnixNano() > c.windowEnd.Load()
		c.mu.Lock()
		onDrop := c.onDrop
		paced := false
		if !over {
			// Also paced: a peer's retransmissions come a second or more
			// apart (RFC 6347 section 4.2.4.1), a flight's datagrams
			// together.
			c.feedTokens = min(feedBurst, c.feedTokens+now.Sub(c.feedLast).Seconds()*feedPerSecond)
			c.feedLast = now
			if paced = c.feedTokens < 1; !paced {
				c.feedTokens--
			}
		}
		c.mu.Unlock()
		if over || paced || c.fed.Add(1) > feedBudget {
			if onDrop != nil {
				onDrop(uint64(len(b)))
			}
			if !paced {
				c.endWindow()
			}
			return false
		}
	}
	select {
	case c.in <- append([]byte(nil), b...):
		return true
	default:
		return false
	}
}

func (c *feedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		deadline, wake := c.deadline, c.wake
		c.mu.Unlock()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		var (
			n   int
			err error
			got bool
		)
		select {
		case b := <-c.in:
			n, got = copy(p, b), true
		case <-c.closed:
			err = net.ErrClosed
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-wake:
			// Deadline changed: start over with the new one.
		}
		if timer != nil {
			timer.Stop()
		}
		if got {
			return n, c.remote, nil
		}
		if err != nil {
			return 0, nil, err
		}
	}
}

func (c *feedConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	if c.takenOver.Load() && !c.allowed(p) {
		c.guarded.Add(1)
		return len(p), nil
	}
	if err := c.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// allowed reports whether a datagram pion writes after the takeover may
// leave: it must start with a handshake or ChangeCipherSpec record (an
// alert would be sealed under the data key, see takenOver), parse as DTLS
// 1.2 records to its end, and hold no record of the data epoch (or later)
// numbered at or above the Sealer's start. The record header's type,
// version, epoch (2 bytes) and sequence number (6 bytes) are in clear, also
// in tls12_cid records (RFC 9146 section 4), whose CID pion writes before
// the length.
func (c *feedConn) allowed(p []byte) bool {
	if len(p) == 0 || (p[0] != contentHandshake && p[0] != contentChangeCipherSpec) {
		return false
	}
	c.mu.Lock()
	epoch, limit, cidLen := c.guardEpoch, c.guardLimit, c.guardCID
	c.mu.Unlock()
	for len(p) > 0 {
		hl := recordlayer.HeaderLen
		if p[0] == byte(recordlayer.ConnectionID) {
			hl += cidLen
		}
		if len(p) < hl {
			return false
		}
		e := binary.BigEndian.Uint16(p[3:5])
		seq := uint64(binary.BigEndian.Uint16(p[5:7]))<<32 | uint64(binary.BigEndian.Uint32(p[7:11]))
		if e > epoch || (e == epoch && seq >= limit) {
			return false
		}
		n := hl + int(binary.BigEndian.Uint16(p[hl-2:hl]))
		if n > len(p) {
			return false
		}
		p = p[n:]
	}
	return true
}

func (c *feedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *feedConn) LocalAddr() net.Addr { return c.local }

func (c *feedConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *feedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.wake)
	c.wake = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *feedConn) SetWriteDeadline(time.Time) error { return nil }

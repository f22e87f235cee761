package dtls

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
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

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed and replaced when the deadline changes
	closed   chan struct{}
	once     sync.Once
}

const contentChangeCipherSpec = 20

// takeOver marks the handshake done and keeps pion's Conn from wedging:
// pion queues every record it decrypts (and every read error) for its
// Read, in a channel of one, and its read loop (which also answers
// retransmissions) blocks until someone reads. Nobody uses pion for data
// after the takeover, so a goroutine drains it until the feed closes.
func (c *feedConn) takeOver(pion interface{ Read([]byte) (int, error) }) {
	c.takenOver.Store(true)
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
		go pion.Close()
	}
}

// feedQueue bounds the datagrams waiting for pion; handshake traffic is a
// handful of datagrams, anything beyond is a flood and is dropped.
const feedQueue = 32

func newFeedConn(local, remote net.Addr, send func([]byte) error) *feedConn {
	return &feedConn{
		local: local, remote: remote, send: send,
		in: make(chan []byte, feedQueue), wake: make(chan struct{}), closed: make(chan struct{}),
	}
}

// Feed queues a copy of a datagram for pion; false if the queue is full.
func (c *feedConn) Feed(b []byte) bool {
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
	if c.takenOver.Load() && (len(p) == 0 || (p[0] != contentHandshake && p[0] != contentChangeCipherSpec)) {
		return len(p), nil
	}
	if err := c.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
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

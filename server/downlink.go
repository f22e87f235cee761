package server

import (
	"context"
	"errors"
	"os"
	"time"

	"kvpn/dtls"
	"kvpn/internal/contain"
	"kvpn/ippkt"
	"kvpn/record"
	"kvpn/session"
	"kvpn/tun"
)

// The downlink, server to clients: routeFromTUN reads the one TUN device
// and queues each packet, in batches, for the session that owns its
// destination; each session's sendLoop writes what is queued to its
// channel (DTLS when up and preferred, else TLS).

// sendLoop writes the packets queued for the session to ch. It gathers
// every batch already waiting into one WritePackets call, so a burst leaves
// in one system call.
func (sess *Session) sendLoop(ctx context.Context, ch *session.CSTPChannel) error {
	s := sess.srv
	var pkts [][]byte
	var held []*batch
	defer func() {
		// After a panic in send: the batches it held go back to the pool
		// (on any other return held has none).
		for _, b := range held {
			if b != nil {
				s.putBatch(b)
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-sess.queue:
			held = append(held[:0], b)
		gather:
			for len(held) < maxGather {
				select {
				case b := <-sess.queue:
					held = append(held, b)
				default:
					break gather
				}
			}
			if h := s.testPanic; h != nil {
				h("sender", sess)
			}
			err := sess.sendHeld(ch, held, &pkts)
			for _, b := range held {
				s.putBatch(b)
			}
			clear(held)
			if err != nil {
				return err
			}
		}
	}
}

// sendHeld sends the packets of the batches held, in order: each run of
// packet batches as one send, each run of frame batches (whole GSO frames,
// gso.go) as one sendFrames. pkts is the reused vector.
func (sess *Session) sendHeld(ch *session.CSTPChannel, held []*batch, pkts *[][]byte) error {
	for i := 0; i < len(held); {
		j := i + 1
		for j < len(held) && held[j].frame == held[i].frame {
			j++
		}
		p := (*pkts)[:0]
		for _, b := range held[i:j] {
			p = append(p, b.pkts[:b.n]...)
		}
		var err error
		if held[i].frame {
			err = sess.sendFrames(ch, p)
		} else {
			err = sess.send(ch, p)
		}
		clear(p)
		*pkts = p[:0]
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// packetSender is the part of the TLS channel send uses (a test double
// in tests).
type packetSender interface {
	WritePackets(bufs [][]byte, offset int) error
}

// send writes pkts over DTLS when it is up and preferred, else over TLS.
// Packets meant for DTLS go over TLS instead (counted: DTLSFallback) when
// the peer closed and keepAlive has not dropped it yet, or its write
// failed before sealing them. A DTLS write that failed after sealing them
// in place loses them (DropDTLSWrite): TLS would carry ciphertext.
func (sess *Session) send(ch packetSender, pkts [][]byte) error {
	if sess.preferDTLS.Load() {
		var err error = errPeerClosed
		if p := sess.peer.Load(); p != nil && p.Up() {
			if err = p.WritePackets(pkts, tun.Headroom); err == nil {
				return nil
			}
		}
		if sess.dtlsSendFailed(len(pkts), err) {
			return nil
		}
	}
	if err := ch.WritePackets(pkts, tun.Headroom); err != nil {
		return err
	}
	bytes := 0
	for _, p := range pkts {
		bytes += len(p) - tun.Headroom
	}
	sess.traffic.AddOut(len(pkts), bytes)
	return nil
}

// maxGather bounds how many queued batches one write may carry: up to
// maxGather x batchSize (256) packets in one sendmmsg or TLS write.
const maxGather = 16

// batchSize is how many packets a downlink batch holds. Small, because a
// TUN read carries packets for many sessions and each of them takes a
// batch of its own: with many sessions each gets one or two packets per
// read, and a batch of 128 slots (190 KiB) per session per read made 100
// sessions at 500 packets/s hold about 4.8 MiB each. A session with more
// packets in one read takes further batches, gathered again by its
// sender (maxGather).
const batchSize = 16

// batch is a vector of packets for one session, copied out of the TUN
// read buffers so that the TUN reader can go on at once.
type batch struct {
	bufs [][]byte // backing buffers, tun.Headroom+MTU each
	pkts [][]byte // pkts[i] = bufs[i][:tun.Headroom+len(packet)]
	n    int
	// frame: one whole GSO frame (virtio-net header and super-packet)
	// in a buffer of its own, from Server.frames (gso.go).
	frame bool
}

func newBatch(mtu int) *batch {
	// Each buffer leaves room behind the packet for a record's tag (and
	// TLS 1.3's inner content type), whichever channel seals it in place.
	size := tun.Headroom + mtu + max(dtls.Tailroom, record.Tailroom)
	mem := make([]byte, batchSize*size)
	b := &batch{bufs: make([][]byte, batchSize), pkts: make([][]byte, batchSize)}
	for i := range b.bufs {
		b.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return b
}

func (b *batch) add(pkt []byte) {
	n := copy(b.bufs[b.n][tun.Headroom:], pkt)
	b.pkts[b.n] = b.bufs[b.n][:tun.Headroom+n]
	b.n++
}

func (s *Server) getBatch() *batch {
	s.batchesOut.Add(1)
	return s.batches.Get().(*batch)
}

func (s *Server) putBatch(b *batch) {
	s.batchesOut.Add(-1)
	b.n = 0
	if b.frame {
		s.frames.Put(b)
		return
	}
	s.batches.Put(b)
}

// pending is a batch being filled for one session during one TUN read.
type pending struct {
	sess *Session
	b    *batch
}

// routeFromTUN reads packets from the TUN device and queues each for the
// session that owns its destination address. It is the server's downlink
// hot loop, shared by every session: a panic in it is recovered, logged
// with its stack and counted (Counters.PanicsTUNReader), and the loop
// starts again after a backoff (contain.Loop). It returns once the device
// is closed.
func (s *Server) routeFromTUN() {
	contain.Loop(s.log, "TUN reader", &s.Counters.PanicsTUNReader, s.routeLoop)
}

// routeLoop is routeFromTUN's loop. A read that fails (other than on a
// closed device) is counted (Counters.TUNReadErrors) and followed by a
// backoff, from contain.ReadMin doubling to contain.ReadMax and reset by
// the next read that returns packets, so a device that fails every read
// cannot turn the loop into a spin.
func (s *Server) routeLoop() {
	bufs := tun.NewBuffers(s.dev.BatchSize())
	sizes := make([]int, len(bufs))
	var open []pending
	var backoff contain.Backoff
	read := s.tunReader()
	for {
		n, err := read(bufs, sizes)
		if err != nil && n == 0 {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			c := s.Counters.TUNReadErrors.Add(1)
			d := backoff.Next()
			if rateOK(&s.lastReadErrLog) {
				s.log.Warn("TUN read failed; backing off", "err", err, "retry-in", d.String(), "read-errors", c)
			}
			time.Sleep(d)
			continue
		}
		backoff.Reset()
		open = s.routeBatch(bufs[:n], sizes, open)
		for _, p := range open {
			if p.b.n > 0 {
				s.flush(p)
			} else {
				s.putBatch(p.b)
			}
		}
		clear(open)
		open = open[:0]
	}
}

// routeBatch sorts one TUN read's packets into batches per session, under
// s.mu (released by a deferred unlock, so that a panic does not leave the
// session table locked): open are the session batches being filled, full
// ones are flushed at once.
func (s *Server) routeBatch(bufs [][]byte, sizes []int, open []pending) []pending {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h := s.testPanic; h != nil {
		h("tun-reader", nil)
	}
	for i := range bufs {
		pkt := bufs[i][tun.Headroom : tun.Headroom+sizes[i]]
		if len(pkt) > s.cfg.MTU {
			s.Counters.DropTooBig.Add(1)
			continue
		}
		src, dst, err := ippkt.Addrs(pkt)
		sess := s.byAddr[dst]
		if sess == nil && err == nil {
			sess = s.iroutes.lookup(dst) // a network behind a site-to-site client
		}
		if err != nil || sess == nil {
			s.Counters.DropNoSession.Add(1)
			continue
		}
		if u := sess.pol.Load(); u != nil && u.iso.client(src) {
			s.isolatedDrop(sess, src, dst) // isolate-clients (isolate.go)
			continue
		}
		j := 0
		for j < len(open) && open[j].sess != sess {
			j++
		}
		if j == len(open) {
			open = append(open, pending{sess: sess, b: s.getBatch()})
		}
		open[j].b.add(pkt)
		if open[j].b.n == batchSize {
			s.flush(open[j])
			open[j].b = s.getBatch()
		}
	}
	return open
}

// flush hands a filled batch to its session's queue, or drops it (the
// session has no connection, or its queue is full).
func (s *Server) flush(p pending) {
	if !p.sess.connected.Load() {
		// Kept for a reconnect: the packets would wait for
		// cookie-timeout, holding the batch.
		s.Counters.DropDetached.Add(uint64(p.b.n))
		if rateOK(&s.lastDetachedLog) {
			s.log.Info("dropped packets for a session without a connection (kept for its reconnect)",
				"user", p.sess.user, "session", p.sess.id, "count", s.Counters.DropDetached.Load())
		}
		s.putBatch(p.b)
		return
	}
	select {
	case p.sess.queue <- p.b:
	default:
		s.Counters.DropQueueFull.Add(uint64(p.b.n))
		s.putBatch(p.b)
	}
}

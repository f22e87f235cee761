package server

import (
	"os"

	"kvpn/ippkt"
	"kvpn/record"
	"kvpn/session"
	"kvpn/tun"
)

// gsoDisabled turns the cstp-gso extension off (KVPN_NO_CSTP_GSO=1): the
// server then neither offers nor accepts GSO-DATA frames.
var gsoDisabled = os.Getenv("KVPN_NO_CSTP_GSO") == "1"

// gsoWriter returns the server's TUN as a VirtioDevice when it can take
// GSO frames (the offload backend), else nil.
func (s *Server) gsoWriter() tun.VirtioDevice {
	if gsoDisabled {
		return nil
	}
	vd, _ := s.dev.(tun.VirtioDevice)
	return vd
}

// deliverGSO writes a GSO-DATA frame from the client to the TUN device as
// it is, after the checks any packet from the client passes: the frame
// must be well formed with segments within the tunnel MTU (a malformed one
// is a protocol violation), and its source must be the session's (the
// super-packet's one IP header stands for all its segments).
func (sess *Session) deliverGSO(vd tun.VirtioDevice, mtu int) func(frame []byte) error {
	return func(frame []byte) error {
		pkt, err := tun.CheckGSOFrame(frame, mtu)
		if err != nil {
			return &session.ProtocolError{Err: err}
		}
		keep, err := sess.checkTLS(pkt)
		if err != nil || !keep {
			return err
		}
		sess.traffic.AddIn(1, len(pkt))
		sess.gsoFrames.Add(1)
		if err := vd.WriteGSO(frame); err != nil {
			// The kernel refused this packet; the tunnel goes on, as for
			// a refused packet in a batch.
			sess.srv.tunWriteFailed(1, err)
		}
		return nil
	}
}

// Server to client, vpnd sends a TCP burst read from its TUN as one
// GSO-DATA frame to a kvpn client that asked for it (cstp-gso-down) while
// that client's traffic goes over TLS: no split at the server, one frame
// instead of about 45 records, one TUN write at the client. Every other
// client, and every client on DTLS, gets the burst split into packets as
// before (tun.splitFrame), so a stock openconnect never sees the frame.

// maxQueuedForFrames: a super-packet is taken whole only while the
// session's queue holds fewer batches than this, which bounds the frames
// (64 KiB each) a session can hold to about that many; behind a longer
// queue it is split and queued as packets, in order, under the queue's
// own bound.
const maxQueuedForFrames = downlinkQueue / 4

// tunReader returns routeLoop's read: ReadTaking with takeFrame when the
// TUN can hand over whole frames and cstp-gso is not turned off, else Read.
func (s *Server) tunReader() func(bufs [][]byte, sizes []int) (int, error) {
	vd := s.gsoWriter()
	if vd == nil {
		return func(bufs [][]byte, sizes []int) (int, error) { return s.dev.Read(bufs, sizes, tun.Headroom) }
	}
	take := s.takeFrame // one method value, not one per read
	return func(bufs [][]byte, sizes []int) (int, error) {
		return vd.ReadTaking(bufs, sizes, tun.Headroom, take)
	}
}

// takeFrame is offered each super-packet the TUN reader reads
// (tun.VirtioDevice.ReadTaking). It takes the frame whole, copied into a
// frame batch and queued, when its destination's session takes frames on
// its current connection, prefers TLS, and the frame passes the checks the
// client will make (tun.CheckGSOFrame with the client's tunnel MTU). It
// leaves every other frame to be split and routed as packets by
// routeBatch, which counts the drops (no session, isolation, detached).
func (s *Server) takeFrame(frame []byte) bool {
	src, dst, err := ippkt.Addrs(frame[tun.VirtioHdrLen:])
	if err != nil {
		return false
	}
	s.mu.RLock()
	sess := s.byAddr[dst]
	if sess == nil {
		sess = s.iroutes.lookup(dst)
	}
	s.mu.RUnlock()
	if sess == nil || sess.preferDTLS.Load() || !sess.connected.Load() || len(sess.queue) >= maxQueuedForFrames {
		return false
	}
	mtu := int(sess.gsoDown.Load())
	if mtu == 0 {
		return false
	}
	if u := sess.pol.Load(); u != nil && u.iso.client(src) {
		return false
	}
	if _, err := tun.CheckGSOFrame(frame, mtu); err != nil {
		return false
	}
	b := s.getFrameBatch()
	b.add(frame)
	s.flush(pending{sess: sess, b: b})
	return true
}

// sendFrames sends whole GSO frames over the TLS channel, even if DTLS
// came up since they were queued (the client takes them on TLS all the
// same). A connection that does not take frames, one that replaced the
// connection they were queued for, gets none: they are dropped and
// counted as detached, like packets queued for a connection that went.
func (sess *Session) sendFrames(ch *session.CSTPChannel, frames [][]byte) error {
	if ch == nil || !ch.PeerGSO() {
		sess.srv.Counters.DropDetached.Add(uint64(len(frames)))
		return nil
	}
	if err := ch.WriteGSOBatch(frames, tun.Headroom); err != nil {
		return err
	}
	pkts, bytes := 0, 0
	for _, f := range frames {
		pkts += tun.GSOSegments(f[tun.Headroom:])
		bytes += len(f) - tun.Headroom - tun.VirtioHdrLen
	}
	sess.traffic.AddOut(pkts, bytes)
	sess.gsoFramesOut.Add(uint64(len(frames)))
	return nil
}

// newFrameBatch is a batch for one whole GSO frame: headroom, the largest
// frame, and tailroom for the record layer.
func newFrameBatch() *batch {
	const size = tun.Headroom + tun.VirtioHdrLen + tun.MaxPacketSize + record.Tailroom
	return &batch{bufs: [][]byte{make([]byte, size)}, pkts: make([][]byte, 1), frame: true}
}

func (s *Server) getFrameBatch() *batch {
	s.batchesOut.Add(1)
	return s.frames.Get().(*batch)
}

package server

import (
	"fmt"

	"kvpn/dtls"
	"kvpn/ippkt"
	"kvpn/session"
	"kvpn/tun"
)

// The uplink: every packet a client sends, over TLS (the session's uplink
// pump, pumps.go) or over DTLS (the listener's sink), passes
// Session.check (source address, iroutes, restrict-user-to-routes,
// isolate-clients) and then tunWriter into the TUN device. The DTLS
// listener only decrypts and routes datagrams to their sessions.

// The DTLS listener leaves dtls.SinkHeadroom bytes in front of each packet
// it delivers; the TUN writer needs tun.VirtioHdrLen of them (this fails
// to compile otherwise).
const _ = uint(dtls.SinkHeadroom - tun.VirtioHdrLen)

// tunWriter writes to the server's TUN device (s.dev) and counts the
// packets of a write that fails (drop reason tun-write), with a log line
// at most every 5 s: the kernel refused them, and the tunnel goes on.
type tunWriter struct{ s *Server }

func (w *tunWriter) Write(bufs [][]byte, offset int) (int, error) {
	n, err := w.s.dev.Write(bufs, offset)
	if err != nil {
		// The offload backend reports 0 on error (coalescing hides which
		// packets went out): the whole batch counts then.
		w.s.tunWriteFailed(len(bufs)-n, err)
	}
	return n, err
}

// tunWriteFailed counts n packets a TUN write failed to deliver.
func (s *Server) tunWriteFailed(n int, err error) {
	c := s.Counters.DropTUNWrite.Add(uint64(max(n, 0)))
	if rateOK(&s.lastTUNWriteLog) {
		s.log.Warn("TUN write failed; packets dropped", "err", err, "tun-write-drops", c)
	}
}

// checkTLS is check for packets that came over TLS: the client sends data
// there only when its DTLS channel is down, so downstream traffic follows.
func (sess *Session) checkTLS(pkt []byte) (bool, error) {
	if h := sess.srv.testPanic; h != nil {
		h("uplink", sess)
	}
	if sess.preferDTLS.Load() {
		sess.preferDTLS.Store(false)
		sess.srv.log.Info("client sends over TLS; moving downstream traffic to TLS", "user", sess.user, "session", sess.id)
	}
	return sess.check(pkt)
}

// Check implements dtls.Owner.
func (sess *Session) Check(pkt []byte) (bool, error) {
	if !sess.preferDTLS.Load() {
		if p := sess.peer.Load(); p != nil && p.Up() {
			sess.preferDTLS.Store(true)
		}
	}
	return sess.check(pkt)
}

// check accepts a packet from the client only if its source address is
// the session's own or lies in one of its user's iroutes: a client must not
// speak for other addresses. Under restrict-user-to-routes the destination
// must also lie in the routes pushed to the client.
func (sess *Session) check(pkt []byte) (bool, error) {
	src, dst, err := ippkt.Addrs(pkt)
	if err != nil {
		return false, &session.ProtocolError{Err: fmt.Errorf("client sent a packet that is %w", err)}
	}
	u := sess.pol.Load()
	if src == sess.addr || src == sess.addr6 || (u != nil && u.ownsSource(src)) {
		if u != nil && u.iso.client(dst) {
			sess.srv.isolatedDrop(sess, src, dst) // isolate-clients (isolate.go)
			return false, nil
		}
		if u == nil || u.allows(dst) {
			return true, nil
		}
		n := sess.restricted.Add(1)
		sess.srv.Counters.DropRestricted.Add(1)
		if rateOK(&sess.lastRestrictLog) {
			sess.srv.log.Warn("dropped packets to a destination outside the user's routes (restrict-user-to-routes)",
				"user", sess.user, "session", sess.id, "source", src.String(), "destination", dst.String(), "count", n)
		}
		return false, nil
	}
	if src.Is6() && sess.quietIPv6Drop(src) {
		// No IPv6 address is assigned, or the source is link-local: the
		// client's kernel sends router solicitations and MLD reports from
		// its link-local address (openconnect's tun does). Not an attack:
		// count quietly.
		sess.srv.Counters.DropNoIPv6.Add(1)
		return false, nil
	}
	n := sess.spoofed.Add(1)
	sess.srv.Counters.DropSpoofed.Add(1)
	if rateOK(&sess.lastSpoofLog) {
		sess.srv.log.Warn("dropped packets with a spoofed source address", "user", sess.user,
			"session", sess.id, "address", sess.addr.String(), "address6", addrString(sess.addr6), "source", src.String(), "count", n)
	}
	return false, nil
}

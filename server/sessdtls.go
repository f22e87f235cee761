package server

import (
	"context"
	"errors"

	"kvpn/dtls"
)

// A session's DTLS side: the PSK offered on CONNECT, the peer the
// listener brings up with it, and what happens when it goes.

// setDTLS records the App-ID and PSK offered on the current connection,
// or (legacy set, psk nil) the X-DTLS-Session-ID and legacy offer.
func (sess *Session) setDTLS(appID [dtls.AppIDLen]byte, psk []byte, chacha, cid bool, legacy *dtls.Legacy) {
	s := sess.srv
	sess.dropDTLS()
	sess.mu.Lock()
	sess.appID, sess.psk, sess.chacha, sess.cid, sess.legacy = appID, psk, chacha, cid, legacy
	sess.mu.Unlock()
	s.mu.Lock()
	s.byAppID[appID] = sess
	s.mu.Unlock()
}

// dtlsPSK returns the PSK (and the negotiated extensions) if appID
// is still the session's current one.
func (sess *Session) dtlsPSK(appID [dtls.AppIDLen]byte) (psk []byte, chacha, cid bool, legacy *dtls.Legacy) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended || sess.appID != appID {
		return nil, false, false, nil
	}
	return sess.psk, sess.chacha, sess.cid, sess.legacy
}

// dropDTLS forgets the App-ID and closes the peer.
func (sess *Session) dropDTLS() {
	s := sess.srv
	sess.mu.Lock()
	appID := sess.appID
	sess.appID, sess.psk, sess.legacy = [dtls.AppIDLen]byte{}, nil, nil
	sess.mu.Unlock()
	s.mu.Lock()
	if s.byAppID[appID] == sess {
		delete(s.byAppID, appID)
	}
	s.mu.Unlock()
	sess.preferDTLS.Store(false)
	if p := sess.swapPeer(nil); p != nil {
		p.Close()
	}
}

// PeerUp implements dtls.Owner: the DTLS handshake completed, downstream
// traffic moves to it, and its liveness is watched like the TLS channel's.
func (sess *Session) PeerUp(p *dtls.Peer) {
	s := sess.srv
	sess.mu.Lock()
	ctx := sess.ctx
	sess.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		s.log.Info("DTLS handshake completed for a connection that has ended; closing it",
			"user", sess.user, "session", sess.id, "from", p.Addr().String())
		p.Close()
		return
	}
	if old := sess.swapPeer(p); old != nil {
		old.Close()
	}
	select {
	case sess.watchWake <- struct{}{}: // keepAlive watches the new peer now
	default:
	}
	sess.preferDTLS.Store(true)
	s.log.Info("DTLS up", "user", sess.user, "session", sess.id, "from", p.Addr().String(), "transport", p.Name())
	// The peer lives as long as its TLS connection. Its liveness is
	// watched by the connection's keepAlive; this only closes it should
	// the connection end between the check above and swapPeer (detach's
	// dropDTLS may have run before), without a goroutine meanwhile.
	// One such callback per session: a new peer's replaces the old one's
	// (a client re-handshaking would pile them up on the connection).
	stop := context.AfterFunc(ctx, func() { sess.lostDTLS(p, nil) })
	sess.mu.Lock()
	old := sess.peerStop
	sess.peerStop = stop
	sess.mu.Unlock()
	if old != nil {
		old()
	}
}

// lostDTLS closes p and, if it is still the session's peer, moves
// downstream traffic to TLS; err (nil when the connection ended) is why.
func (sess *Session) lostDTLS(p *dtls.Peer, err error) {
	if sess.clearPeer(p) {
		sess.preferDTLS.Store(false)
		if err != nil {
			sess.srv.log.Info("DTLS lost; downstream traffic moves to TLS", "user", sess.user, "session", sess.id, "err", err)
		}
	}
	p.Close()
}

// errPeerClosed is why a peer the listener closed (the client's DTLS
// goodbye, exhausted sequence numbers) is dropped from the session.
var errPeerClosed = errors.New("DTLS peer closed")

// dtlsSendFailed counts n packets that should have gone over DTLS and
// did not (err says why), with a log line at most every 5 s. It reports
// whether they are lost (sealed in place) rather than to go over TLS.
func (sess *Session) dtlsSendFailed(n int, err error) (lost bool) {
	s := sess.srv
	lost = errors.Is(err, dtls.ErrSealed)
	var c uint64
	if lost {
		c = s.Counters.DropDTLSWrite.Add(uint64(n))
	} else {
		c = s.Counters.DTLSFallback.Add(uint64(n))
	}
	if rateOK(&s.lastDTLSSendLog) {
		if lost {
			s.log.Warn("DTLS send failed; packets dropped", "user", sess.user, "session", sess.id, "err", err, "dtls-write-drops", c)
		} else {
			s.log.Info("DTLS send failed; packets go over TLS", "user", sess.user, "session", sess.id, "err", err, "dtls-fallback-packets", c)
		}
	}
	return lost
}

package server

import (
	"crypto/tls"
	"sort"
	"time"

	"kvpn/ctl"
	"kvpn/dtls"
	"kvpn/internal/hist"
)

// Totals is a plain copy of traffic counters ("in" is from clients).
type Totals struct {
	InPackets, InBytes, OutPackets, OutBytes uint64
}

func (t *Totals) add(o Totals) {
	t.InPackets += o.InPackets
	t.InBytes += o.InBytes
	t.OutPackets += o.OutPackets
	t.OutBytes += o.OutBytes
}

// addPeer adds what a DTLS peer carried ("in" is what it received).
func (t *Totals) addPeer(p *dtls.Peer) {
	st := p.Stats()
	t.add(Totals{
		InPackets: st.RxPackets.Load(), InBytes: st.RxBytes.Load(),
		OutPackets: st.TxPackets.Load(), OutBytes: st.TxBytes.Load(),
	})
}

// swapPeer makes p the session's DTLS peer and returns the old one, whose
// counters move into the session's under statMu, so a reader of totals
// never counts a peer twice or misses it.
func (sess *Session) swapPeer(p *dtls.Peer) *dtls.Peer {
	sess.statMu.Lock()
	defer sess.statMu.Unlock()
	old := sess.peer.Swap(p)
	if old != nil {
		sess.dtlsDone.addPeer(old)
	}
	return old
}

// clearPeer removes p if it is still the session's peer.
func (sess *Session) clearPeer(p *dtls.Peer) bool {
	sess.statMu.Lock()
	defer sess.statMu.Unlock()
	if !sess.peer.CompareAndSwap(p, nil) {
		return false
	}
	sess.dtlsDone.addPeer(p)
	return true
}

// totals is everything the session carried so far, over TLS and DTLS.
func (sess *Session) totals() Totals {
	sess.statMu.Lock()
	defer sess.statMu.Unlock()
	t := sess.dtlsDone
	t.add(Totals{
		InPackets: sess.traffic.InPackets.Load(), InBytes: sess.traffic.InBytes.Load(),
		OutPackets: sess.traffic.OutPackets.Load(), OutBytes: sess.traffic.OutBytes.Load(),
	})
	if p := sess.peer.Load(); p != nil {
		t.addPeer(p)
	}
	return t
}

// Transports as the operator sees them.
const (
	TransportDTLS = "DTLS"
	TransportTLS  = "TLS"
	TransportNone = "-" // no connection: waiting for the client to reconnect
)

// info describes the session for `vpnd ctl show users`.
func (sess *Session) info(now time.Time) ctl.User {
	u := ctl.User{
		ID: sess.id, User: sess.user, Remote: sess.from.String(),
		Since: sess.created, UptimeSeconds: int64(now.Sub(sess.created).Seconds()),
		Transport: TransportNone,
	}
	sess.mu.Lock()
	ch := sess.ch
	if sess.addr.IsValid() {
		u.Address = sess.addr.String()
	}
	sess.mu.Unlock()
	if ch != nil {
		u.Connected = true
		u.Transport = TransportTLS
		conn := ch.Conn()
		u.Remote = conn.RemoteAddr().String()
		cs := conn.ConnectionState()
		u.TLS = tls.VersionName(cs.Version) + " " + tls.CipherSuiteName(cs.CipherSuite)
		e := conn.Engine()
		u.TLSTX, u.TLSRX = e.TX, e.RX
	}
	if p := sess.peer.Load(); p != nil && p.Up() {
		u.DTLS = p.Name()
		u.DTLSRemote = p.Addr().String()
		if sess.preferDTLS.Load() {
			u.Transport = TransportDTLS
			// Data moves through kvpn's own DTLS record layer (in-place
			// AES-GCM/ChaCha20, sendmmsg, UDP GSO), not pion's.
			u.DTLSFastPath = true
		}
	}
	t := sess.totals()
	u.BytesIn, u.BytesOut, u.PacketsIn, u.PacketsOut = t.InBytes, t.OutBytes, t.InPackets, t.OutPackets
	sess.opsInfo(&u) // issue #15 (ctlops.go)
	return u
}

// transport is the session's transport for the sessions gauge.
func (sess *Session) transport() string {
	sess.mu.Lock()
	up := sess.ch != nil
	sess.mu.Unlock()
	switch {
	case !up:
		return TransportNone
	case sess.preferDTLS.Load():
		if p := sess.peer.Load(); p != nil && p.Up() {
			return TransportDTLS
		}
	}
	return TransportTLS
}

// list returns the sessions, oldest first. It does not hold s.mu while
// looking into each session (attach takes sess.mu before s.mu).
func (s *Server) list() []*Session {
	s.mu.RLock()
	l := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		l = append(l, sess)
	}
	s.mu.RUnlock()
	sort.Slice(l, func(i, j int) bool { return l[i].id < l[j].id })
	return l
}

// Users describes every session.
func (s *Server) Users() []ctl.User {
	now := time.Now()
	var us []ctl.User
	for _, sess := range s.list() {
		us = append(us, sess.info(now))
	}
	return us
}

// Snapshot is the server's counters at one moment, for metrics and
// `vpnd ctl show stats`. Traffic totals never go down: ended sessions'
// traffic is kept in them.
type Snapshot struct {
	Sessions        map[string]int // by transport (TransportDTLS, TransportTLS, TransportNone)
	Traffic         Totals
	Drops           map[string]uint64 // by reason
	Logins          uint64
	LoginFailures   uint64
	LoginThrottled  uint64
	TLSHandshake    hist.Snapshot
	DTLSHandshake   hist.Snapshot
	HandshakeFailed map[string]uint64 // by transport ("tls", "dtls")
	// PoolInUse counts the tunnel addresses handed out, by family ("ipv4",
	// "ipv6"): held by live sessions and by those waiting for a reconnect.
	PoolInUse map[string]int
	Uptime    time.Duration
	// Failures the data path contained (issue #12): recovered panics by
	// goroutine ("session", "connection", "tun-reader", "dtls-reader",
	// "dtls-handshake"), failed reads of the shared readers, each followed
	// by a backoff, by source ("tun", "dtls"), and packets meant for DTLS
	// that went over TLS.
	Panics       map[string]uint64
	ReadErrors   map[string]uint64
	DTLSFallback uint64
}

// Snapshot reads the counters.
func (s *Server) Snapshot() Snapshot {
	c := &s.Counters
	snap := Snapshot{
		Sessions: map[string]int{TransportDTLS: 0, TransportTLS: 0, TransportNone: 0},
		Drops: map[string]uint64{
			"no-session":           c.DropNoSession.Load(),
			"spoofed":              c.DropSpoofed.Load(),
			"no-ipv6":              c.DropNoIPv6.Load(),
			"queue-full":           c.DropQueueFull.Load(),
			"detached":             c.DropDetached.Load(),
			"too-big":              c.DropTooBig.Load(),
			"restricted":           c.DropRestricted.Load(),
			"bad-request":          c.BadRequests.Load(),
			"request-too-large":    c.RequestTooLarge.Load(),
			"login-banned":         c.LoginBanned.Load(),
			"login-busy":           c.LoginBusy.Load(),
			"credentials-too-long": c.CredentialsTooLong.Load(),
			"session-limit":        c.SessionLimit.Load(),
			"login-conn-limit":     c.LoginConnLimit.Load(),
			"login-conn-evicted":   c.LoginConnEvicted.Load(),
			"accept-error":         c.AcceptErrors.Load(),
			// Sessions ended (and cookies refused) by a session limit.
			"session-timeout": c.SessionTimeouts.Load(),
			"user-changed":    c.UserChanged.Load(),
			"write-stalled":   c.WriteStalled.Load(),
			// Packets lost to a failed TUN write or DTLS send.
			"tun-write":  c.DropTUNWrite.Load(),
			"dtls-write": c.DropDTLSWrite.Load(),
			// Legacy DTLS offers not made; the tunnel stays on TLS.
			"dtls-legacy-bad-secret": c.DTLSLegacyBadSecret.Load(),
			"dtls-legacy-no-suite":   c.DTLSLegacyNoSuite.Load(),
			// Client certificates (auth = "certificate").
			"cert-unknown-ca":      c.CertUnknownCA.Load(),
			"cert-expired":         c.CertExpired.Load(),
			"cert-revoked":         c.CertRevoked.Load(),
			"cert-no-user":         c.CertNoUser.Load(),
			"cert-invalid":         c.CertInvalid.Load(),
			"cert-missing":         c.CertMissing.Load(),
			"cert-cookie-mismatch": c.CertCookieMismatch.Load(),
			// Issue #15.
			"auth-timeout":             c.AuthTimeouts.Load(),
			"login-idle-timeout":       c.LoginIdleTimeouts.Load(),
			"client-to-client":         c.DropIsolated.Load(),
			"connect-script-failed":    c.ConnectScriptFail.Load(),
			"disconnect-script-failed": c.DisconnectScriptFail.Load(),
			"script-skipped":           c.ScriptsSkipped.Load(),
		},
		Panics: map[string]uint64{
			"session":        c.PanicsSession.Load(),
			"connection":     c.PanicsConn.Load(),
			"tun-reader":     c.PanicsTUNReader.Load(),
			"dtls-reader":    0,
			"dtls-handshake": 0,
		},
		ReadErrors:      map[string]uint64{"tun": c.TUNReadErrors.Load(), "dtls": 0},
		DTLSFallback:    c.DTLSFallback.Load(),
		Logins:          c.Logins.Load(),
		LoginFailures:   c.LoginFailures.Load(),
		LoginThrottled:  c.LoginThrottled.Load(),
		TLSHandshake:    c.TLSHandshake.Snapshot(),
		HandshakeFailed: map[string]uint64{"tls": c.TLSHandshakeFailed.Load(), "dtls": 0},
		Uptime:          time.Since(s.started),
		PoolInUse:       map[string]int{"ipv4": s.pool.InUse()},
	}
	if s.pool6 != nil {
		snap.PoolInUse["ipv6"] = s.pool6.InUse()
	}
	if s.dtls != nil {
		dc := &s.dtls.Counters
		snap.Drops["dtls-no-session"] = dc.NoSession.Load()
		snap.Drops["dtls-bad-record"] = dc.BadRecords.Load()
		snap.Drops["dtls-rejected"] = dc.Rejected.Load()
		snap.Drops["dtls-handshake-limit"] = dc.HandshakeLimit.Load()
		snap.Drops["dtls-handshake-after-takeover"] = dc.FeedDropped.Load()
		snap.Drops["dtls-roam-limit"] = dc.RoamLimit.Load()
		snap.Drops["dtls-roam-source-limit"] = dc.RoamSourceLimit.Load()
		snap.Drops["dtls-handshake-busy"] = dc.HandshakeBusy.Load()
		snap.Drops["dtls-legacy-bad-finished"] = dc.LegacyBadFinished.Load()
		snap.Drops["dtls-legacy-bad-hello"] = dc.LegacyBadHello.Load()
		snap.HandshakeFailed["dtls"] = dc.HandshakeFailed.Load()
		snap.Panics["dtls-reader"] = dc.ReaderPanics.Load()
		snap.Panics["dtls-handshake"] = dc.HandshakePanics.Load()
		snap.ReadErrors["dtls"] = dc.ReadErrors.Load()
		snap.DTLSHandshake = dc.HandshakeTime.Snapshot()
	} else {
		var none hist.Latency
		snap.DTLSHandshake = none.Snapshot()
	}
	s.radiusDrops(snap.Drops) // radius-* (radius.go)
	// Totals under s.mu: a session that ends moves its traffic into
	// s.retired under the same lock, so it is counted exactly once.
	s.mu.RLock()
	snap.Traffic = s.retired
	for sess := range s.sessions {
		snap.Traffic.add(sess.totals())
	}
	s.mu.RUnlock()
	for _, sess := range s.list() {
		snap.Sessions[sess.transport()]++
	}
	return snap
}

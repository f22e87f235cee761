package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/ctl"
	"kvpn/dtls"
	"kvpn/internal/contain"
	"kvpn/ippkt"
	"kvpn/record"
	"kvpn/session"
	"kvpn/tun"
)

// Session is one logged-in user. It outlives its TCP connection for
// cookie-timeout, so that a client reconnecting with its cookie gets the
// same address back (openconnect aborts otherwise).
type Session struct {
	srv     *Server
	id      uint64
	user    string
	from    netip.Addr
	cookie  auth.Cookie
	created time.Time

	mu    sync.Mutex
	addr  netip.Addr
	addr6 netip.Addr           // from the IPv6 pool; invalid without one (ipv6.go)
	ch    *session.CSTPChannel // nil while detached
	ended bool

	queue chan *batch // packets from the TUN device waiting for the channel

	// watchWake tells the connection's keepAlive that a DTLS peer came up,
	// so that it watches it from now, not from its next deadline.
	watchWake chan struct{}
	// connected is whether the session has a channel (attach to detach):
	// without one, packets for it are dropped, not queued, so a session
	// kept for a reconnect holds no batches (up to downlinkQueue of them,
	// 190 KiB each, until cookie-timeout before).
	connected atomic.Bool

	// DTLS: the App-ID and PSK of the current TLS connection, the peer
	// once its handshake completed, and whether downstream traffic goes
	// over DTLS (it does once the peer is up; a DATA frame on TLS means
	// the client moved back, as in ocserv).
	appID      [dtls.AppIDLen]byte
	psk        []byte
	chacha     bool         // kvpn extension: ChaCha20 first for DTLS
	cid        bool         // kvpn extension: DTLS connection IDs
	legacy     *dtls.Legacy // legacy AnyConnect DTLS offer (appID is its Session-ID), or nil
	peer       atomic.Pointer[dtls.Peer]
	preferDTLS atomic.Bool
	ctx        context.Context // of the current connection; ends with it
	peerStop   func() bool     // unregisters the last peer's close on ctx (PeerUp); guarded by mu

	// login is when the user logged in with a password, gen their
	// password-file generation then (auth.PasswdFile.Generation); both
	// travel in every ticket sealed for the session (resume.go).
	login time.Time
	gen   uint64
	// cert is whether the session logged in with a client certificate
	// (its cookies are bound to it: auth.Ticket.Cert), certLeaf the
	// certificate its connection presented last (guarded by mu), checked
	// against a reloaded CRL (clientcert.go).
	cert     bool
	certLeaf *x509.Certificate

	// ticketExpires is the latest expiry of a cookie handed out for this
	// session (guarded by mu): a revocation lasts until then.
	ticketExpires time.Time

	// rad is the session's RADIUS settings and accounting (radius.go);
	// nil without auth = "radius".
	rad atomic.Pointer[sessRadius]

	// pol is the user's policy (fixed address, iroutes, routes), set when
	// the session gets its address and swapped by ApplyPolicy.
	pol atomic.Pointer[userPolicy]
	// group is the group the user logged in to ("" for none), set when
	// the session is made (groups.go).
	group string

	spoofed         atomic.Uint64
	gsoFrames       atomic.Uint64 // GSO-DATA frames written to the TUN (cstp-gso)
	lastSpoofLog    atomic.Int64
	restricted      atomic.Uint64
	lastRestrictLog atomic.Int64

	// gsoDown is the tunnel MTU of the current connection when its client
	// takes GSO-DATA frames (cstp-gso-down), else 0 (gso.go).
	gsoDown atomic.Int32
	// gsoFramesOut counts GSO-DATA frames sent to the client.
	gsoFramesOut atomic.Uint64

	// Traffic (stats.go): what the TLS channel carried, counted per batch;
	// DTLS peers count their own, folded into dtlsDone when they go.
	traffic  session.Traffic
	statMu   sync.Mutex // orders retiring a peer against reading the counters
	dtlsDone Totals

	ops sessOps // issue #15: scripts and events (scripts.go)
}

// newSessionIn makes the session of a user logged in to group (none: "").
func (s *Server) newSessionIn(user, group string, from netip.Addr) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	now := time.Now()
	sess := &Session{
		srv: s, id: s.nextID, user: user, group: group, from: from, created: now,
		queue: make(chan *batch, downlinkQueue), watchWake: make(chan struct{}, 1),
		login: now.Truncate(time.Second), // as a ticket carries it
	}
	if set := s.currentSettings(); set != nil && set.Passwd != nil && s.cfg.passwordAuth() {
		// Read after the password was verified: a reload in between
		// gives the new entry's generation, or none (the session then
		// ends at that reload's check or its first resume).
		sess.gen, _ = set.Passwd.Generation(user)
	}
	s.sessions[sess] = struct{}{}
	return sess
}

// attach makes ch the session's channel, replacing (and closing) an older
// one, and returns the session's tunnel address, allocating it on first use:
// the user's fixed address if it has one, else one from the pool.
func (sess *Session) attach(ch *session.CSTPChannel, prev netip.Addr, prev6 netip.Prefix) (netip.Addr, error) {
	s := sess.srv
	if u := sess.policyIn(s.policy.Load()); u.exclusive() {
		// A fixed address and the networks behind a site cannot be in two
		// sessions: a new login of the user replaces the old session (a
		// gateway that restarted must not wait for cookie-timeout).
		if s.replaceOthers(sess) {
			sess.end("replaced by a newer session of the same user")
			return netip.Addr{}, errors.New("a newer session of the same site-to-site user exists")
		}
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended {
		return netip.Addr{}, errors.New("session has ended")
	}
	if old := sess.ch; old != nil {
		old.Close()
	}
	if err := sess.allocate(prev, prev6); err != nil {
		return netip.Addr{}, err
	}
	sess.ch = ch
	sess.gsoDown.Store(0) // until this connection's CONNECT asks for it
	sess.connected.Store(true)
	return sess.addr, nil
}

// allocate gives the session its tunnel addresses if it has none yet: the
// user's fixed address if it has one, else one from the pool (prev if it
// is free there). The caller holds sess.mu.
func (sess *Session) allocate(prev netip.Addr, prev6 netip.Prefix) error {
	if sess.addr.IsValid() {
		return nil
	}
	s := sess.srv
	// Allocate and publish under s.mu, so that a concurrent
	// ApplyPolicy sees either none or both of address and policy.
	s.mu.Lock()
	u := sess.policyIn(s.policy.Load())
	var a netip.Addr
	var err error
	if fip := sess.radiusIP(); fip.IsValid() { // RADIUS Framed-IP-Address
		a, err = fip, s.pool.GetFixed(fip)
	} else if u.ipv4.IsValid() {
		a, err = u.ipv4, s.pool.GetFixed(u.ipv4)
	} else {
		a, err = s.pool.Get(prev)
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	sess.addr = a
	sess.pol.Store(u)
	s.byAddr[a] = sess
	s.bindLocked(sess, u)
	s.mu.Unlock()
	// Only with the first address: a reconnecting client must get the
	// same addresses back (openconnect aborts otherwise), and check
	// reads addr6 without the lock.
	sess.attach6(prev6)
	return nil
}

// reserveAddress gives a session its pool addresses at login, so that the
// login cookie names them: a client that knows only that cookie (stock
// openconnect) keeps its address when it resumes on a restarted node or on
// another one, although X-CSTP-Address alone no longer picks an address
// (resume.go, wantedAddrs). Users with a fixed address or iroutes get
// theirs at CONNECT, after replaceOthers. A pool that is full now is tried
// again at CONNECT.
func (s *Server) reserveAddress(sess *Session, log *slog.Logger) {
	if p := s.policy.Load(); p == nil || sess.policyIn(p).exclusive() {
		return // no policy: a unit test's server without routes
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if err := sess.allocate(netip.Addr{}, netip.Prefix{}); err != nil {
		log.Info("no address reserved at login; trying again at CONNECT", "err", err)
	}
}

// replaceOthers ends the older sessions of sess's user and reports
// whether a newer one exists, which then wins: whichever of two sessions
// attaches first (a gateway's old session reconnecting with its cookie
// while its new login connects), the newest stays. Serialised, so two
// attaches cannot end each other.
func (s *Server) replaceOthers(sess *Session) (newer bool) {
	s.exclusiveMu.Lock()
	defer s.exclusiveMu.Unlock()
	var old []*Session
	s.mu.RLock()
	for o := range s.sessions {
		switch {
		case o == sess || o.user != sess.user:
		case o.id > sess.id:
			newer = true
		default:
			old = append(old, o)
		}
	}
	s.mu.RUnlock()
	if newer {
		return true
	}
	for _, o := range old {
		s.log.Warn("new session of a site-to-site user replaces the old one", "user", sess.user,
			"session", sess.id, "replaced", o.id)
		o.terminate("replaced by a new session of the same user")
	}
	return false
}

// detach records that ch ended with err. A DISCONNECT from the client ends
// the session (user logout); anything else keeps it for a reconnect.
func (sess *Session) detach(ch *session.CSTPChannel, err error) {
	sess.mu.Lock()
	current := sess.ch == ch
	if current {
		sess.ch = nil
		sess.gsoDown.Store(0)
		sess.connected.Store(false)
	}
	sess.mu.Unlock()
	ch.Close()
	if current {
		sess.drainQueue()
	}
	if !current {
		return // replaced by a newer connection
	}
	sess.dropDTLS()
	sess.srv.connEvent(ctl.EventDisconnect, sess, ch.Conn().RemoteAddr().String(), "", errString(err))
	log := sess.srv.log.With("user", sess.user, "session", sess.id)
	var pe *contain.PanicError
	if errors.As(err, &pe) {
		// A bug, logged with its stack where it was recovered: the
		// session's state is not to be trusted, so it ends (its cookie no
		// longer resumes it) and nothing else does.
		log.Error("ending the session after a panic in its goroutines", "err", err, "address", sess.addr.String())
		sess.end("internal error")
		return
	}
	var pc *session.PeerClosedError
	if errors.As(err, &pc) {
		log.Info("client disconnected", "reason", pc.Reason)
		sess.end("client disconnected")
		return
	}
	if errors.Is(err, session.ErrWriteStalled) {
		// The client stopped reading: a reconnect gets a new connection,
		// and keeping the session would keep its address for nothing.
		sess.srv.Counters.WriteStalled.Add(1)
		log.Warn("closing connection and ending the session: client stopped reading (tunnel write timeout)",
			"err", err, "address", sess.addr.String())
		sess.end("client stopped reading")
		return
	}
	var perr *session.ProtocolError
	if errors.As(err, &perr) || errors.Is(err, record.ErrCorrupt) {
		// Forged, corrupt or malformed input: no reconnect with this
		// session; its address is freed at once.
		log.Warn("closing connection and ending the session: client broke the protocol", "err", err)
		sess.end("protocol violation")
		return
	}
	sess.mu.Lock()
	ended := sess.ended // a shutdown or an operator may have ended it meanwhile
	sess.mu.Unlock()
	if !ended {
		log.Info("connection lost; keeping session for reconnect",
			"err", err, "address", sess.addr.String(), "cookie-timeout", sess.srv.cfg.cookieTimeout().String())
		sess.srv.cookies.Extend(sess.cookie, sess.srv.cfg.cookieTimeout())
	}
}

// tunnelWriteTimeout bounds each write on a tunnel: max(2 x DPD, 30 s),
// longer than a live client's DPD exchange takes, so only a client that
// stopped reading meets it (writeTimeout overrides it in tests).
func (s *Server) tunnelWriteTimeout() time.Duration {
	if s.writeTimeout > 0 {
		return s.writeTimeout
	}
	return max(2*s.cfg.dpd(), 30*time.Second)
}

// end frees everything the session holds.
func (sess *Session) end(reason string) {
	s := sess.srv
	sess.mu.Lock()
	if sess.ended {
		sess.mu.Unlock()
		return
	}
	sess.ended = true
	ch := sess.ch
	sess.ch = nil
	sess.connected.Store(false)
	addr, addr6 := sess.addr, sess.addr6
	sess.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
	s.cookies.Revoke(sess.cookie)
	if reason != cstp.ReasonServerShutdown {
		// Logged out, kicked, expired or broke the protocol: its cookie
		// must not bring it back on this node. A shutdown leaves it
		// resumable, on this node once restarted or on another.
		s.revokeSession(sess)
	}
	sess.dropDTLS()
	s.mu.Lock()
	if addr.IsValid() && s.byAddr[addr] == sess {
		delete(s.byAddr, addr)
	}
	if addr6.IsValid() && s.byAddr[addr6] == sess {
		delete(s.byAddr, addr6)
	}
	s.iroutes.removeSession(sess)
	delete(s.sessions, sess)
	s.retired.add(sess.totals()) // server totals stay monotonic
	s.mu.Unlock()
	// Unmapped now: routeFromTUN queues nothing more for it.
	sess.drainQueue()
	if addr.IsValid() {
		s.pool.Put(addr)
	}
	if addr6.IsValid() {
		s.pool6.Put(addr6)
	}
	s.log.Info("session ended", "user", sess.user, "session", sess.id, "reason", reason,
		"address", addr.String(), "address6", addrString(addr6), "spoofed-drops", sess.spoofed.Load(),
		"gso-frames", sess.gsoFrames.Load(), "gso-frames-out", sess.gsoFramesOut.Load())
	s.radiusEnded(sess, reason)                              // RADIUS accounting Stop (radius.go)
	s.sessionEnded(sess, reason, addr, addr6, sess.totals()) // events, disconnect-script (scripts.go)
}

// terminate kicks the client (TERMINATE) and ends the session.
func (sess *Session) terminate(reason string) {
	sess.mu.Lock()
	ch := sess.ch
	sess.mu.Unlock()
	if ch != nil {
		ch.Terminate(reason)
	}
	sess.end(reason)
}

// setConnContext records the context of the session's current TLS
// connection; a DTLS peer that comes up is watched until it ends.
func (sess *Session) setConnContext(ctx context.Context) {
	sess.mu.Lock()
	sess.ctx = ctx
	sess.mu.Unlock()
}

// run pumps the session's packets over ch until ch fails. The uplink runs
// in the calling goroutine (the connection's own, which would only wait
// otherwise): one goroutine stack fewer per session.
func (sess *Session) run(ctx context.Context, ch *session.CSTPChannel, log *slog.Logger) error {
	s := sess.srv
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first of the three to return ends the others: its error is the
	// channel's, and closing ch unblocks the uplink's read.
	var first error
	var once sync.Once
	stop := func(err error) {
		once.Do(func() {
			first = err
			cancel()
			ch.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		stop(sess.contained("sender", func() error { return sess.sendLoop(ctx, ch) }))
	}()
	go func() {
		defer wg.Done()
		stop(sess.contained("liveness", func() error { return sess.keepAlive(ctx, ch) }))
	}()
	// Buffers from the server's pool, only while packets are in flight:
	// an idle session holds none (64 x 64 KiB each before).
	stop(sess.contained("uplink", func() error {
		return session.UplinkPooled(ch, s.tunOut, s.uplinks, tun.Headroom, sess.checkTLS, &sess.traffic)
	}))
	wg.Wait()
	return first
}

// contained runs f, one of the session's pumps or its liveness watch, and
// returns its error. A panic in f is recovered, logged with its stack,
// counted (Counters.PanicsSession) and returned as a *contain.PanicError:
// run then stops the session's other goroutines and detach ends this
// session, while the server and every other session go on.
func (sess *Session) contained(where string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = contain.Recovered(sess.srv.log, "session "+where, v, &sess.srv.Counters.PanicsSession,
				"user", sess.user, "session", sess.id)
		}
	}()
	return f()
}

// drainQueue puts the batches waiting in the session's queue back into
// the pool: those of a write that failed, or queued while the connection
// went away.
func (sess *Session) drainQueue() {
	for {
		select {
		case b := <-sess.queue:
			sess.srv.putBatch(b)
		default:
			return
		}
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

// keepAlive runs dead-peer detection and keepalives for the TLS channel
// and, while there is one, the session's DTLS peer, from one goroutine
// (each had its own: one stack fewer per session). It returns when ctx
// ends (nil) or the TLS channel is dead; a dead DTLS peer is dropped and
// traffic moves to TLS, as openconnect and ocserv do.
func (sess *Session) keepAlive(ctx context.Context, ch *session.CSTPChannel) error {
	s := sess.srv
	// keepalive is the interval the client is told (X-CSTP-Keepalive,
	// X-DTLS-Keepalive) to keep its idle channels and their NAT bindings
	// alive with; vpnd itself sends no keepalives, only DPD requests to a
	// channel silent for dpd, as ocserv's worker does: the client's
	// keepalives already refresh the binding, and at 10k idle sessions
	// the server's own would double the records it seals and opens.
	l := session.Liveness{DPD: s.cfg.dpd()}
	if h := s.testPanic; h != nil {
		h("liveness", sess)
	}
	// It sleeps until the earlier of the two channels' next deadlines
	// (session.Watch.Check), woken early when a new DTLS peer comes up.
	t := time.NewTimer(l.MinWait())
	defer t.Stop()
	tls := session.NewWatch(ch, l)
	var peer session.Watch
	var watched *dtls.Peer
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-sess.watchWake:
		}
		now := time.Now()
		next, err := tls.Check(now)
		if err != nil {
			return err
		}
		if p := sess.peer.Load(); p != nil {
			if p != watched {
				watched, peer = p, session.NewWatch(p, l)
			}
			if !p.Up() {
				sess.lostDTLS(p, errPeerClosed)
			} else if pn, err := peer.Check(now); err != nil {
				sess.lostDTLS(p, err)
			} else if !pn.IsZero() && (next.IsZero() || pn.Before(next)) {
				next = pn
			}
		}
		t.Reset(l.Wait(now, next)) // Go 1.23 timers: Reset drops a stale tick

	}
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

// rateOK reports whether a rate-limited log line may be written now: the
// first at once, then at most every 5 s (the line carries the count).
func rateOK(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	l := last.Load()
	return now-l > int64(5*time.Second) && last.CompareAndSwap(l, now)
}

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

// sweep ends sessions whose cookie expired while they had no connection,
// or whose session-timeout passed, and keeps the cookies of connected
// sessions fresh.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sweepOnce(time.Now())
	}
}

// sweepOnce is one round of sweep.
func (s *Server) sweepOnce(now time.Time) {
	// A copy of the list: attach takes sess.mu before s.mu, so holding
	// s.mu while taking sess.mu could deadlock with it.
	for _, sess := range s.list() {
		if s.radiusSweep(sess, now) { // RADIUS Session-Timeout, Idle-Timeout
			continue
		}
		if s.pastSessionTimeout(sess.login, now) {
			s.Counters.SessionTimeouts.Add(1)
			s.log.Info("ending session: session-timeout reached", "user", sess.user, "session", sess.id,
				"login", sess.login.UTC().Format(time.RFC3339), "session-timeout", s.cfg.sessionTimeout().String())
			sess.terminate("session-timeout reached")
			continue
		}
		sess.mu.Lock()
		if sess.ch != nil {
			s.cookies.Extend(sess.cookie, s.cfg.cookieTimeout()+s.cfg.authTimeout())
		}
		sess.mu.Unlock()
	}
	for _, sess := range s.cookies.Sweep() {
		sess.end("cookie expired")
	}
	if err := s.revoked.Sweep(now); err != nil {
		s.log.Error("saving revoked sessions", "file", s.revokedFile(), "err", err)
	}
}

// Package server is vpnd's core: it accepts TLS connections, runs the
// OpenConnect login and CONNECT exchange, keeps the table of sessions and
// their tunnel addresses, and routes packets between the one TUN device and
// the sessions (dropping packets whose source a session does not own).
package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/auth"
	"kvpn/certs"
	"kvpn/cstp"
	"kvpn/ctl"
	"kvpn/dtls"
	dtlsrecord "kvpn/dtls/record"
	"kvpn/internal/contain"
	"kvpn/internal/hist"
	"kvpn/ktlsbridge"
	"kvpn/netcfg"
	"kvpn/radius"
	"kvpn/record"
	"kvpn/session"
	"kvpn/tun"
	"kvpn/udp"
)

const (
	// loginTimeout bounds the TLS handshake and the whole login exchange, so
	// a slow or silent client cannot hold a connection open before it has
	// authenticated.
	loginTimeout = 30 * time.Second
	// loginWait bounds how long a correct login may wait, within the
	// login deadline, for other attempts in flight on its throttle keys
	// (auth.Throttle.Wait: users behind one NAT) and then for a slot of
	// the verification pool. Waiting is the server's load, not the
	// client's fault: 200 argon2id checks (about 40 ms of a core each) from
	// one address take 4 s on 2 cores, and a storm from many addresses
	// fills verifyQueue, so the bound is most of loginTimeout rather than
	// a few seconds.
	loginWait = 20 * time.Second
	// verifyQueue is how many logins may wait for the verification pool
	// (auth.VerifyPool) beyond those verifying: as many as the default
	// max-login-connections, so a login storm queues rather than being
	// told the server is busy. A waiter holds a goroutine, not a hash's
	// memory (argon2id allocates its 19 MiB only once it runs).
	verifyQueue = DefaultMaxLoginConnections
	// maxBody bounds a login POST body.
	maxBody = 64 << 10
	// uplinkBatch is how many packets one session reads from its channel
	// before writing them to the TUN device in one call.
	uplinkBatch = 64
	// downlinkQueue is how many packet batches may wait for a session's
	// channel before newer ones are dropped (like a router's queue):
	// 128 x batchSize = 2048 packets, about 3 MiB of full-size ones.
	downlinkQueue = 128
)

// Counters are the server's drop and event counters.
type Counters struct {
	DropNoSession  atomic.Uint64 // packet from TUN for an address no session owns
	DropSpoofed    atomic.Uint64 // packet from a session with a foreign source
	DropNoIPv6     atomic.Uint64 // IPv6 packet from a session without an IPv6 address
	DropQueueFull  atomic.Uint64 // session's downlink queue full
	DropDetached   atomic.Uint64 // packet from TUN for a session without a connection
	DropTooBig     atomic.Uint64 // packet from TUN larger than the tunnel MTU
	DropRestricted atomic.Uint64 // packet from a session outside its routes (restrict-user-to-routes)
	LoginFailures  atomic.Uint64
	LoginThrottled atomic.Uint64
	// Login limits (limits.go).
	LoginBanned        atomic.Uint64 // refused: the address is past max-ban-score
	LoginBusy          atomic.Uint64 // not checked: the verification pool was full
	CredentialsTooLong atomic.Uint64 // refused unchecked: username or password over its bound
	SessionLimit       atomic.Uint64 // refused: max-clients or max-same-clients reached
	LoginConnLimit     atomic.Uint64 // connections closed at once: too many not logged in, none left in its handshake
	LoginConnEvicted   atomic.Uint64 // connections still in their TLS handshake closed to make room for a newcomer
	AcceptErrors       atomic.Uint64 // Accept failures (EMFILE and the like), each followed by a backoff
	BadRequests        atomic.Uint64
	// RequestTooLarge counts requests whose head was over a bound
	// (cstp.MaxHeadBytes, cstp.MaxStartLine, cstp.MaxHeaderLines).
	RequestTooLarge atomic.Uint64
	Logins          atomic.Uint64 // successful logins (sessions created)
	// Session limits (resume.go, reload.go, sessions.go).
	SessionTimeouts atomic.Uint64 // sessions ended, cookies refused: session-timeout since login
	UserChanged     atomic.Uint64 // sessions ended, cookies refused: user changed, locked or deleted
	WriteStalled    atomic.Uint64 // sessions ended: the client stopped reading (tunnel write deadline)

	// Failures the data path contains rather than letting them take the
	// daemon down or spin (issue #12). Recovered panics, each logged with
	// its stack, by goroutine:
	PanicsSession   atomic.Uint64 // a session's pumps or liveness watch: that session ended
	PanicsConn      atomic.Uint64 // a connection's login or CONNECT handling: that connection closed
	PanicsTUNReader atomic.Uint64 // the TUN reader (routeFromTUN): restarted after a backoff
	TUNReadErrors   atomic.Uint64 // failed TUN reads, each followed by a backoff
	// DTLSFallback counts packets for a session whose downstream traffic
	// goes over DTLS that were sent over TLS instead: its DTLS peer had
	// closed, or failed before sealing them.
	DTLSFallback  atomic.Uint64
	DropDTLSWrite atomic.Uint64 // packets sealed for DTLS whose send failed (lost: their plaintext is gone)
	DropTUNWrite  atomic.Uint64 // packets in TUN writes that failed
	// Legacy AnyConnect DTLS offers not made (offerLegacyDTLS): the
	// X-DTLS-Master-Secret was missing or malformed, or no offered suite
	// name is one vpnd resumes. The tunnel goes on over TLS.
	DTLSLegacyBadSecret atomic.Uint64
	DTLSLegacyNoSuite   atomic.Uint64
	// Client certificates (clientcert.go): refused in the TLS handshake,
	// by reason; missing where a login needs one; a certificate-bound
	// cookie presented without that user's certificate (or a cookie of
	// a password login where certificates are required).
	CertUnknownCA      atomic.Uint64
	CertExpired        atomic.Uint64
	CertRevoked        atomic.Uint64 // also sessions ended by a reloaded CRL
	CertNoUser         atomic.Uint64 // no user name in the cert-user-oid field
	CertInvalid        atomic.Uint64
	CertMissing        atomic.Uint64
	CertCookieMismatch atomic.Uint64

	TLSHandshakeFailed atomic.Uint64
	TLSHandshake       hist.Latency // successful TLS handshakes (and kTLS setup)

	// Issue #15 (hardening.go, scripts.go, isolate.go).
	AuthTimeouts         atomic.Uint64 // connections closed at auth-timeout before their CONNECT
	LoginIdleTimeouts    atomic.Uint64 // connections closed at login-idle-timeout before their CONNECT
	DropIsolated         atomic.Uint64 // packets between clients where isolate-clients forbids them
	ConnectScriptFail    atomic.Uint64 // sessions refused: connect-script failed or timed out
	DisconnectScriptFail atomic.Uint64 // disconnect-script runs that failed or timed out
	ScriptsSkipped       atomic.Uint64 // disconnect-script runs not started: too many waiting
}

// Server is a running vpnd.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	tlsCfg   *tls.Config
	Pin      string
	settings atomic.Pointer[Settings] // login and push settings a reload may change; see reload.go
	throttle *auth.Throttle
	cookies  *auth.CookieJar[*Session]
	tickets  *auth.TicketKeys // seals and opens session cookies (resume.go)
	revoked  *auth.Revoked    // sessions logged out here, until their cookies expire
	node     string           // this node's name in cookies
	resumeMu sync.Mutex       // serialises resuming sessions from cookies
	// exclusiveMu serialises replacing the sessions of site-to-site users.
	exclusiveMu sync.Mutex
	pool        *pool
	pool6       *pool // nil without ipv6-network
	dev         tun.Device
	net         *netcfg.Changes

	udp *udp.Conn // nil when DTLS is off
	// udpReaders are the other sockets of udp's SO_REUSEPORT group.
	udpReaders []*udp.Conn
	dtls       *dtls.Listener // nil when DTLS is off

	mu       sync.RWMutex
	byAddr   map[netip.Addr]*Session
	byAppID  map[[dtls.AppIDLen]byte]*Session
	sessions map[*Session]struct{}
	nextID   uint64
	iroutes  routeTable // networks behind connected site-to-site clients

	// The users table and route policy (policy.go), swapped as a whole by
	// ApplyPolicy; polMu serializes that, and guards kroutes, the kernel
	// routes for iroutes (addRoute installs one; a test replaces it).
	policy   atomic.Pointer[policy]
	polMu    sync.Mutex
	kroutes  map[netip.Prefix]*netcfg.Changes
	addRoute func(netip.Prefix) (*netcfg.Changes, error)

	batches sync.Pool // *batch
	// frames are batches of one whole GSO frame, for clients that take
	// them (cstp-gso-down, gso.go).
	frames sync.Pool // *batch
	// batchesOut counts downlink batches taken from batches and not put
	// back: in a TUN read, in a session's queue or in its write.
	batchesOut atomic.Int64
	// lastDetachedLog rate-limits the DropDetached log line; the others
	// those of TUN read and write failures and of DTLS send failures.
	lastDetachedLog, lastReadErrLog, lastTUNWriteLog, lastDTLSSendLog atomic.Int64
	// tunOut is the TUN device as the sessions and the DTLS listener
	// write to it: it counts failed writes.
	tunOut *tunWriter
	// uplinks are the sessions' uplink batches, taken per read (sessions.go).
	uplinks *session.BatchPool

	Counters Counters

	// Rate-limited log lines for events a client can cause at will.
	logTooLarge, logBanned, logThrottled, logFailed, logBusy, logSessionLimit, logConnLimit, logConnEvicted rateLog
	logCertRefused                                                                                          rateLog
	logAuthTimeout, logIdleTimeout, logIsolated, logScript                                                  rateLog  // issue #15
	ops                                                                                                     opsState // issue #15: events, scripts (ctlops.go, scripts.go)

	// rad is the RADIUS client and accounting; nil unless auth includes
	// "radius" (radius.go).
	rad *radiusState

	// certVerifier checks client certificates; nil unless auth includes
	// "certificate" (clientcert.go).
	certVerifier *certs.ClientVerifier

	// verifyPool runs every password verification (auth.VerifyPool);
	// verify checks a password (a test counts calls through it).
	verifyPool *auth.VerifyPool
	verify     func(user, password string) bool
	bans       *auth.Bans // ocserv-style ban scores (max-ban-score)
	// admitMu makes checking the session limits and creating the session
	// one step.
	admitMu    sync.Mutex
	loginConns loginConns // connections that have not logged in yet
	otp        otpLogins  // one-time password second factor (otp.go)

	// Reload and the operator's view (reload.go, stats.go).
	reloadMu sync.Mutex
	active   *Config // the running configuration, as reload compares it
	source   func() (*Config, error)
	started  time.Time
	retired  Totals // traffic of ended sessions, under mu

	// writeTimeout, when set, replaces tunnelWriteTimeout (tests).
	writeTimeout time.Duration
	// testPanic, nil but in tests, is called in the data path's
	// goroutines (where: "sender", "uplink", "liveness" with their
	// session, "tun-reader" without) so a test can make one panic.
	testPanic func(where string, sess *Session)
}

// newServer returns a Server with its tables made and nothing opened
// (New adds the certificate, the TUN device and the sockets; unit tests
// use it as it is).
func newServer(cfg *Config, log *slog.Logger) *Server {
	s := &Server{
		cfg:      cfg,
		log:      log,
		throttle: auth.NewThrottle(nil),
		cookies:  auth.NewCookieJar[*Session](nil),
		// One verification per core at a time (see auth.VerifyPool).
		verifyPool: auth.NewVerifyPool(0, verifyQueue, loginWait),
		bans:       auth.NewBansConfig(cfg.banConfig(), nil),
		pool:       newPool(cfg.pool),
		byAddr:     map[netip.Addr]*Session{},
		byAppID:    map[[dtls.AppIDLen]byte]*Session{},
		sessions:   map[*Session]struct{}{},
		frames:     sync.Pool{New: func() any { return newFrameBatch() }},
		kroutes:    map[netip.Prefix]*netcfg.Changes{},
		uplinks:    session.NewBatchPool(func() [][]byte { return tun.NewBuffers(uplinkBatch) }),
	}
	if cfg.pool6.IsValid() {
		s.pool6 = newPool(cfg.pool6)
	}
	s.addRoute = s.installRoute
	s.tunOut = &tunWriter{s: s}
	s.verify = func(user, password string) bool { return s.currentSettings().Passwd.Verify(user, password) }
	s.rad = newRadiusState(cfg, log)
	return s
}

// New prepares a server: certificate, password file, TUN device with the
// pool's first address. It does not accept connections yet.
func New(cfg *Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	cert, created, err := certs.LoadOrCreate(cfg.ServerCert, cfg.ServerKey, host)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created self-signed certificate", "cert", cfg.ServerCert, "key", cfg.ServerKey)
	}
	s := newServer(cfg, log)
	s.Pin = certs.Pin(cert.Leaf)
	s.tlsCfg = record.BaseConfig()
	s.tlsCfg.Certificates = []tls.Certificate{cert}
	set, err := BuildSettings(cfg)
	if err != nil {
		return nil, err
	}
	s.setupClientAuth(s.tlsCfg, set)
	if err := s.otp.open(cfg.OTPStateFile, log); err != nil {
		return nil, err
	}
	if err := s.loadTickets(); err != nil {
		return nil, err
	}
	s.settings.Store(set)
	s.active = cfg
	s.started = time.Now()
	mtu := cfg.MTU
	s.batches.New = func() any { return newBatch(mtu) }

	dev, err := tun.Create(cfg.Device, cfg.MTU, cfg.tunBE)
	if err != nil {
		return nil, fmt.Errorf("creating TUN device %q: %w", cfg.Device, err)
	}
	s.dev = dev
	s.net = netcfg.New()
	gw := netip.PrefixFrom(s.pool.gateway, cfg.pool.Bits())
	if err := s.net.SetLink(dev.Name(), gw, cfg.MTU); err != nil {
		dev.Close()
		return nil, fmt.Errorf("configuring %s: %w", dev.Name(), err)
	}
	if s.pool6 != nil {
		gw6 := netip.PrefixFrom(s.pool6.gateway, cfg.pool6.Bits())
		if err := s.net.SetLink(dev.Name(), gw6, cfg.MTU); err != nil {
			dev.Close()
			s.net.Restore()
			return nil, fmt.Errorf("configuring %s: %w", dev.Name(), err)
		}
	}
	s.polMu.Lock()
	err = s.applyPolicy(cfg.pol)
	s.polMu.Unlock()
	if err != nil {
		s.removeRoutes()
		dev.Close()
		s.net.Restore()
		return nil, err
	}
	if cfg.UDPListen != "" {
		if err := s.listenDTLS(cfg.UDPListen, s.tunOut); err != nil {
			s.removeRoutes()
			dev.Close()
			s.net.Restore()
			return nil, err
		}
	}
	return s, nil
}

// listenDTLS opens the DTLS sockets on addr and the Listener that reads
// them (Serve starts it). One socket per core in an SO_REUSEPORT group
// (udp.GroupSize: KVPN_UDP_SOCKETS, 1 for a single socket), each with a
// reader of its own, so that decryption of many sessions runs on every
// core; the peers are shared by all of them.
func (s *Server) listenDTLS(addr string, dev session.PacketWriter) error {
	conns, err := udp.ListenGroup(addr, udp.GroupSize())
	if err != nil {
		return fmt.Errorf("udp-listen %s: %w", addr, err)
	}
	s.udp, s.udpReaders = conns[0], conns[1:]
	s.dtls = dtls.NewListener(dtls.ListenerConfig{Conn: conns[0], Readers: conns[1:], Find: s.findDTLS, TUN: dev, Log: s.log})
	return nil
}

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

// findDTLS resolves a ClientHello's App-ID to its session and PSK.
func (s *Server) findDTLS(appID []byte) (dtls.Match, bool) {
	var key [dtls.AppIDLen]byte
	copy(key[:], appID)
	s.mu.RLock()
	sess := s.byAppID[key]
	s.mu.RUnlock()
	if sess == nil {
		return dtls.Match{}, false
	}
	psk, chacha, cid, legacy := sess.dtlsPSK(key)
	return dtls.Match{Owner: sess, PSK: psk, ChaCha: chacha, CID: cid, Legacy: legacy}, psk != nil || legacy != nil
}

// dtlsPort is the UDP port clients send DTLS to, 0 when DTLS is off.
func (s *Server) dtlsPort() int {
	if s.udp == nil {
		return 0
	}
	return s.udp.LocalAddr().(*net.UDPAddr).Port
}

// Device returns the server's TUN device name.
func (s *Server) Device() string { return s.dev.Name() }

// Serve accepts connections on ln until ctx ends, then terminates every
// session and releases the TUN device.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.log.Info("vpnd listening", "listen", ln.Addr().String(), "device", s.dev.Name(),
		"pool", s.cfg.pool.String(), "pool6", s.cfg.pool6.String(), "mtu", s.cfg.MTU, "tun-backend", string(s.cfg.tunBE), "pin", s.Pin)
	go s.routeFromTUN()
	go s.sweep(ctx)
	if s.dtls != nil {
		s.log.Info("DTLS listening", "udp-listen", s.udp.LocalAddr().String(), "udp-sockets", 1+len(s.udpReaders))
		go s.dtls.Serve()
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	// Connections get their own context, cancelled only after shutdown
	// has sent TERMINATE to every client: were they to end with ctx, a
	// session could close its channel before the TERMINATE went out, and
	// its client would take the shutdown for a lost connection.
	connCtx, cancelConns := context.WithCancel(context.Background())
	defer cancelConns()
	var wg sync.WaitGroup
	s.acceptLoop(ctx, ln, &wg, func(c net.Conn) { s.handleConn(connCtx, c) })
	s.shutdown()
	s.radiusClose() // accounting Stops of the sessions just ended
	cancelConns()
	wg.Wait()
	for _, c := range s.udpReaders {
		c.Close()
	}
	if s.udp != nil {
		s.udp.Close()
	}
	s.removeRoutes()
	s.dev.Close()
	if err := s.net.Restore(); err != nil {
		s.log.Warn("restoring network configuration", "err", err)
	}
	return nil
}

// shutdown tells every connected client that the server goes away.
func (s *Server) shutdown() {
	for _, sess := range s.list() {
		sess.terminate(cstp.ReasonServerShutdown)
	}
}

// handleConn serves one TCP connection: TLS handshake, login requests, and
// at most one CONNECT, after which the connection carries the tunnel.
func (s *Server) handleConn(ctx context.Context, raw net.Conn) {
	remote := raw.RemoteAddr().String()
	log := s.log.With("remote", remote)
	defer func() {
		// A bug in handling one connection must not take down the others.
		if v := recover(); v != nil {
			contain.Recovered(log, "connection", v, &s.Counters.PanicsConn)
			raw.Close()
		}
	}()
	from := addrOf(raw.RemoteAddr())
	// Refused before any work: a banned address, and connections beyond
	// the bounds on those not logged in yet.
	if banned, _ := s.bans.Banned(from); banned {
		s.Counters.LoginBanned.Add(1)
		if ok, n := s.logBanned.allow(); ok {
			log.Warn("connection refused: address banned (max-ban-score)", "not-logged", n)
		}
		raw.Close()
		return
	}
	lc, evicted, ok := s.loginConns.acquire(from, s.cfg.MaxLoginConnections, s.cfg.MaxLoginConnectionsPerIP, func() { raw.Close() })
	if evicted > 0 {
		s.Counters.LoginConnEvicted.Add(uint64(evicted))
		if ok, n := s.logConnEvicted.allow(); ok {
			log.Warn("closed the oldest connection still in its TLS handshake: too many connections not logged in",
				"max-login-connections", s.cfg.MaxLoginConnections,
				"max-login-connections-per-ip", s.cfg.MaxLoginConnectionsPerIP, "not-logged", n)
		}
	}
	if !ok {
		s.Counters.LoginConnLimit.Add(1)
		if ok, n := s.logConnLimit.allow(); ok {
			log.Warn("connection refused: too many connections not logged in, all past their TLS handshake",
				"max-login-connections", s.cfg.MaxLoginConnections,
				"max-login-connections-per-ip", s.cfg.MaxLoginConnectionsPerIP, "not-logged", n)
		}
		raw.Close()
		return
	}
	defer lc.release()
	pl := s.startPreLogin(raw, from)
	defer s.connectionPoint(pl, log)
	ctx = withPreLogin(ctx, pl)
	hctx, cancel := context.WithDeadline(ctx, pl.deadline)
	start := time.Now()
	conn, err := ktlsbridge.Server(hctx, raw, s.tlsCfg, s.cfg.ktls)
	cancel()
	if err != nil {
		s.Counters.TLSHandshakeFailed.Add(1)
		if isTimeout(err) {
			s.preLoginTimedOut(pl, "TLS handshake", log)
		} else if !s.certRefused(err, log) {
			log.Info("TLS handshake failed", "err", err)
		}
		return
	}
	s.Counters.TLSHandshake.Observe(time.Since(start))
	lc.handshakeDone()
	log = log.With("record-layer", conn.Engine().String())
	s.serveConn(ctx, conn, log, lc.release)
}

// serveConn runs the HTTP exchange of a connection whose TLS handshake is
// done: login requests, and at most one CONNECT, after which the
// connection carries the tunnel. It closes conn when it is done, and calls
// loggedIn once the tunnel is up (the connection no longer counts as one
// that has not logged in).
func (s *Server) serveConn(ctx context.Context, conn record.Conn, log *slog.Logger, loggedIn func()) {
	br := session.NewFrameReader(conn)
	pl := preLoginOf(ctx)
	for {
		pl.nextRequest(conn) // login-idle-timeout between requests
		// Every request's head is bounded before it is parsed, the
		// CONNECT's too (cstp.PeekHead leaves the bytes behind it in br).
		if err := cstp.PeekHead(br); err != nil {
			var big *cstp.HeadTooLargeError
			switch {
			case isTimeout(err) && pl != nil:
				s.preLoginTimedOut(pl, "login", log)
			case errors.As(err, &big):
				s.Counters.RequestTooLarge.Add(1)
				s.malformedPoints(remoteAddr(conn), log)
				if ok, n := s.logTooLarge.allow(); ok {
					log.Warn("closing connection: request too large", "why", big.What,
						"limit-bytes", cstp.MaxHeadBytes, "limit-lines", cstp.MaxHeaderLines, "not-logged", n)
				}
				writeResponse(conn, big.Status, "", nil, nil)
			case !errors.Is(err, io.EOF):
				s.badRequest(conn, log)
				log.Info("closing connection: not an HTTP request", "err", err)
				writeResponse(conn, http.StatusBadRequest, "", nil, nil)
			}
			conn.Close()
			return
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.badRequest(conn, log)
				log.Info("closing connection: not an HTTP request", "err", err)
				writeResponse(conn, http.StatusBadRequest, "", nil, nil)
			}
			conn.Close()
			return
		}
		switch {
		case req.Method == http.MethodPost && (req.URL.Path == "/" || req.URL.Path == "/auth"):
			if !s.handleAuth(ctx, conn, req, log) {
				conn.Close()
				return
			}
		case req.Method == http.MethodPost && req.URL.Path == cstp.CookieRefreshPath:
			if !s.handleRefresh(conn, req, log) {
				conn.Close()
				return
			}
		case req.Method == http.MethodConnect && req.URL.Path == cstp.TunnelPath:
			s.handleConnect(ctx, conn, br, req, log, loggedIn)
			return
		default:
			s.badRequest(conn, log)
			log.Info("closing connection: request is not part of the protocol", "method", req.Method, "path", req.URL.Path)
			writeResponse(conn, http.StatusNotFound, "", nil, nil)
			conn.Close()
			return
		}
		if req.Close {
			conn.Close()
			return
		}
	}
}

// handleAuth answers a login POST. It reports whether the connection may
// go on.
func (s *Server) handleAuth(ctx context.Context, conn record.Conn, req *http.Request, log *slog.Logger) bool {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		s.badRequest(conn, log)
		log.Info("closing connection: login body unreadable or too large", "err", err, "bytes", len(body))
		writeResponse(conn, http.StatusRequestEntityTooLarge, "", nil, nil)
		return false
	}
	msg, err := cstp.ParseClientMessage(req.Header.Get("Content-Type"), body)
	if err != nil {
		s.badRequest(conn, log)
		log.Info("closing connection: bad login message", "err", err)
		writeResponse(conn, http.StatusBadRequest, "", nil, nil)
		return false
	}
	xml := func(doc []byte, extra http.Header) bool {
		if cstp.IsKvpnAgent(req.UserAgent()) {
			if extra == nil {
				extra = http.Header{}
			}
			extra.Set(cstp.HeaderExtensions, cstp.ExtList)
		}
		return writeResponse(conn, http.StatusOK, "text/xml; charset=utf-8", doc, extra) == nil
	}
	const prompt = "Please enter your username and password."
	certUser, leaf := s.certUserOf(conn)
	switch msg.Type {
	case "init":
		if s.cfg.certAuth() {
			if certUser == "" {
				return s.refuseNoCert(xml, log)
			}
			if !s.cfg.askPassword() {
				break // certificate only: the certificate is the login
			}
			return xml(s.passwordForm(passwordPrompt(certUser), "", false, msg.GroupSelect), nil)
		}
		return xml(s.passwordForm(prompt, "", true, msg.GroupSelect), nil)
	case "logout":
		if t, sess, err := s.ticketOf(req, certUser); err == nil {
			if sess != nil {
				sess.end("logout")
			}
			// Also when another node holds the session: it cannot be
			// resumed here any more (other nodes learn nothing of it).
			s.revoked.Add(t.Session, t.Expires)
		}
		return xml(cstp.AuthComplete("Logged out."), nil)
	case "auth-reply":
	default:
		s.badRequest(conn, log)
		log.Info("closing connection: unexpected login message type", "type", msg.Type)
		writeResponse(conn, http.StatusBadRequest, "", nil, nil)
		return false
	}
	user := msg.Username
	form := func(errMsg string) []byte { return s.passwordForm(prompt, errMsg, true, msg.GroupSelect) }
	if s.cfg.certAuth() {
		if certUser == "" {
			return s.refuseNoCert(xml, log)
		}
		// The certificate names the user; a username in the form is
		// ignored.
		user = certUser
		pp := passwordPrompt(certUser)
		form = func(errMsg string) []byte { return s.passwordForm(pp, errMsg, false, msg.GroupSelect) }
	}
	addr := remoteAddr(conn)
	log = log.With("user", logUser(user))
	if banned, left := s.bans.Banned(addr); banned {
		// Also checked before the TLS handshake; this is a connection
		// opened before the ban.
		s.Counters.LoginBanned.Add(1)
		if ok, n := s.logBanned.allow(); ok {
			log.Warn("login refused: address banned (max-ban-score)", "retry-after", left.Round(time.Second).String(), "not-logged", n)
		}
		xml(form("Too many failed logins from your address; try again later."), nil)
		return false
	}
	// Second step: the one-time password (otp.go).
	pend, step2, cont := s.otpStep(req, msg, addr, form, xml, log)
	if step2 && pend == nil {
		return cont
	}
	group := ""
	if step2 {
		user, group, leaf = pend.user, pend.group, pend.leaf
		log = log.With("user", logUser(user))
	}
	if !step2 && s.cfg.passwordAuth() {
		if ok, cont := s.checkPassword(user, msg.Password, addr, form, xml, log); !ok {
			return cont
		}
	}
	var radSet *radius.Settings // RADIUS (radius.go)
	if !step2 && s.rad != nil {
		var ok, cont bool
		if user, radSet, ok, cont = s.radiusAuth(req, msg, user, addr, form, xml, log); !ok {
			return cont
		}
	}
	if !step2 {
		// Groups (groups.go), then the second factor if required.
		set := s.currentSettings()
		groups := s.userGroups(set, user, leaf)
		if radSet != nil {
			groups = append(groups, radSet.Groups...) // RADIUS Class OU=
		}
		g, err := loginGroup(set, msg.GroupSelect, groups)
		if err != nil {
			s.Counters.LoginFailures.Add(1)
			log.Warn("login refused: group not allowed", "err", err)
			return xml(form("Login failed: "+err.Error()+"."), nil)
		}
		group = g
		if s.otpRequired() {
			return s.askOTP(user, group, addr, leaf, form, xml, log)
		}
	}
	s.admitMu.Lock()
	if err := s.admitSession(user); err != nil {
		s.admitMu.Unlock()
		s.Counters.SessionLimit.Add(1)
		if ok, n := s.logSessionLimit.allow(); ok {
			log.Warn("login refused: session limit", "err", err, "not-logged", n)
		}
		return xml(form("Login refused: "+err.Error()+"."), nil)
	}
	s.Counters.Logins.Add(1)
	s.loggedIn(ctx)
	sess := s.newSessionIn(user, group, addr)
	s.admitMu.Unlock()
	if leaf != nil {
		sess.mu.Lock()
		sess.cert, sess.certLeaf = true, leaf
		sess.mu.Unlock()
	}
	cookie, err := s.cookies.Issue(sess, s.cfg.cookieTimeout()+s.cfg.authTimeout())
	if err != nil {
		log.Error("issuing cookie", "err", err)
		return false
	}
	sess.cookie = cookie
	if radSet != nil { // RADIUS (radius.go)
		if ok, cont := s.radiusAdmit(sess, radSet, xml, form, log); !ok {
			return cont
		}
	}
	s.reserveAddress(sess, log)
	ticket, err := s.sealTicket(sess)
	if err != nil {
		log.Error("sealing cookie", "err", err)
		sess.end("no cookie")
		return false
	}
	if leaf != nil {
		log.Info("login succeeded", "session", sess.id, "auth", strings.Join(s.cfg.authNames(), "+"),
			"cert-serial", leaf.SerialNumber.Text(16))
	} else {
		log.Info("login succeeded", "session", sess.id, "group", group)
	}
	h := http.Header{}
	h.Set("Set-Cookie", "webvpn="+ticket+"; Secure")
	return xml(cstp.AuthComplete("Success"), h)
}

// passwordPrompt is the login form's message when the certificate names
// the user and a password is also required.
func passwordPrompt(user string) string {
	return "Certificate accepted for " + user + ". Please enter your password."
}

// refuseNoCert answers a login without a valid client certificate where
// one is required, and closes the connection.
func (s *Server) refuseNoCert(xml func([]byte, http.Header) bool, log *slog.Logger) bool {
	s.Counters.CertMissing.Add(1)
	if ok, n := s.logCertRefused.allow(); ok {
		log.Warn("login refused: no client certificate (auth includes certificate)", "not-logged", n)
	}
	xml(cstp.AuthForm("A client certificate is required.", "Login failed: no client certificate.", false, false), nil)
	return false
}

// checkPassword runs the throttle and the password check of a login. ok
// reports a correct password; otherwise the answer was written and cont
// says whether the connection may go on.
func (s *Server) checkPassword(user, password string, addr netip.Addr, form func(string) []byte,
	xml func([]byte, http.Header) bool, log *slog.Logger) (ok, cont bool) {
	wctx, cancel := context.WithTimeout(context.Background(), loginWait)
	defer cancel()
	if why := s.throttleWait(wctx, user, addr, log); why != "" {
		return false, xml(form(why), nil)
	}
	// From here the attempt is in flight for the throttle until Fail,
	// Succeed or Abandon.
	if auth.CredentialsTooLong(user, password) {
		s.loginFailed(user, addr, log)
		s.Counters.CredentialsTooLong.Add(1)
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: username or password too long, not checked",
				"username-bytes", len(user), "password-bytes", len(password),
				"max-username", auth.MaxUsernameLen, "max-password", auth.MaxPasswordLen, "not-logged", n)
		}
		return false, xml(form(fmt.Sprintf("Login failed: username or password too long (at most %d and %d bytes).",
			auth.MaxUsernameLen, auth.MaxPasswordLen)), nil)
	}
	var good bool
	if err := s.verifyPool.Do(wctx, func() { good = s.verify(user, password) }); err != nil {
		// The server's load, not the client's fault: no failure counted.
		s.throttle.Abandon(user, addr)
		s.Counters.LoginBusy.Add(1)
		if ok, n := s.logBusy.allow(); ok {
			log.Warn("login not checked: password verification queue full", "err", err,
				"workers", s.verifyPool.Size(), "not-logged", n)
		}
		return false, xml(form("Server busy, please try again."), nil)
	}
	if user == "" || !good {
		s.loginFailed(user, addr, log)
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: wrong username or password", "not-logged", n)
		}
		return false, xml(form("Login failed."), nil)
	}
	if s.otpRequired() {
		// Only half a login: the code's step resolves the throttle.
		s.throttle.Abandon(user, addr)
	} else {
		s.throttle.Succeed(user, addr)
	}
	return true, false
}

// handleConnect turns the connection into a tunnel for the session the
// cookie names, and runs it until the connection ends.
func (s *Server) handleConnect(ctx context.Context, conn record.Conn, br *bufio.Reader, req *http.Request, log *slog.Logger, loggedIn func()) {
	creq, err := cstp.ParseConnectRequest(req)
	if err != nil {
		s.badRequest(conn, log)
		log.Info("closing connection: bad CONNECT", "err", err)
		writeResponse(conn, http.StatusBadRequest, "", nil, nil)
		conn.Close()
		return
	}
	certUser, leaf := s.certUserOf(conn)
	sess, prev, prev6, err := s.sessionFor(creq, remoteAddr(conn), certUser, log)
	if errors.Is(err, errMaxClients) || errors.Is(err, errMaxSameClients) {
		// A session resumed from a cookie counts against the limits too.
		s.Counters.SessionLimit.Add(1)
		if ok, n := s.logSessionLimit.allow(); ok {
			log.Warn("CONNECT refused: session limit", "err", err, "not-logged", n)
		}
		writeResponse(conn, http.StatusServiceUnavailable, "", nil, nil)
		conn.Close()
		return
	}
	if err != nil {
		log.Warn("CONNECT refused: bad cookie", "err", err)
		writeResponse(conn, http.StatusUnauthorized, "", nil, nil)
		conn.Close()
		return
	}
	log = log.With("user", sess.user, "session", sess.id)
	s.loggedIn(ctx)
	if leaf != nil {
		// The certificate this connection presented (a resumed session's
		// too), for a reloaded CRL to check.
		sess.mu.Lock()
		sess.certLeaf = leaf
		sess.mu.Unlock()
	}
	ch, err := session.NewCSTPChannel(conn, br, s.cfg.MTU)
	if err != nil {
		log.Error("creating channel", "err", err)
		conn.Close()
		return
	}
	addr, err := sess.attach(ch, prev, prev6)
	if err != nil {
		log.Warn("CONNECT refused", "err", err)
		writeResponse(conn, http.StatusServiceUnavailable, "", nil, nil)
		conn.Close()
		return
	}
	if !s.tunnelUp(sess, remoteAddr(conn), log) {
		// connect-script refused the session (scripts.go): it has ended.
		writeResponse(conn, http.StatusServiceUnavailable, "", nil, nil)
		conn.Close()
		return
	}
	set := s.currentSettings()
	mtu := tunnelMTU(s.cfg.MTU, linkBase(creq.BaseMTU, remoteAddr(conn)))
	addr6 := sess.ipv6()
	if addr6.IsValid() && mtu < minIPv6MTU {
		// As ocserv: a link this small cannot carry IPv6.
		log.Info("no IPv6 for this connection: tunnel MTU below IPv6's minimum", "mtu", mtu)
		addr6 = netip.Addr{}
	}
	params := &cstp.TunnelParams{
		Address:       addr,
		MTU:           mtu,
		Netmask:       s.pool.netmask(),
		SplitInclude:  s.splitInclude(sess.pol.Load().routes, addr6),
		SplitExclude:  sess.pol.Load().excludes,
		DNS:           pushedDNS(sess.pol.Load(), set.DNS),
		DefaultDomain: set.DefaultDomain,
		BaseMTU:       1500,
		DPD:           s.cfg.DPD,
		Keepalive:     s.cfg.Keepalive,
		RekeyMethod:   "none",
	}
	if addr6.IsValid() {
		params.AddressIP6 = netip.PrefixFrom(addr6, 128)
	}
	// The connection's context exists before the DTLS offer leaves: the
	// client starts its handshake as soon as it reads the answer, and the
	// DTLS peer it brings up lives as long as this connection.
	cctx, cancelConn := context.WithCancel(ctx)
	defer cancelConn()
	sess.setConnContext(cctx)
	switch {
	case s.dtls == nil:
	case offersPSKNegotiate(creq.DTLSCipherSuite) || offersPSKNegotiate(creq.DTLS12CipherSuite):
		// PSK whenever offered, as ocserv.
		kvpn := cstp.IsKvpnAgent(req.UserAgent())
		chacha := kvpn && creq.Extra.Get(cstp.HeaderDTLSCipher) == cstp.ExtDTLSChaCha
		cid := kvpn && creq.Extra.Get(cstp.HeaderDTLSCID) == "1"
		if err := s.offerDTLS(sess, conn, params, chacha, cid); err != nil {
			log.Warn("DTLS not offered", "err", err)
		}
	case creq.DTLSCipherSuite != "" || creq.DTLS12CipherSuite != "" || creq.DTLSMasterSecret != "":
		if err := s.offerLegacyDTLS(sess, creq, params, log); err != nil {
			log.Warn("legacy DTLS not offered; the tunnel stays on TLS", "err", err)
		}
	}
	coalesce := cstp.IsKvpnAgent(req.UserAgent()) && creq.Extra.Get(cstp.HeaderCoalesce) == "1"
	if coalesce {
		if params.Extra == nil {
			params.Extra = http.Header{}
		}
		params.Extra.Set(cstp.HeaderCoalesce, "1")
	}
	var gso tun.VirtioDevice
	if cstp.IsKvpnAgent(req.UserAgent()) && creq.Extra.Get(cstp.HeaderGSO) == "1" {
		if gso = s.gsoWriter(); gso != nil {
			if params.Extra == nil {
				params.Extra = http.Header{}
			}
			params.Extra.Set(cstp.HeaderGSO, "1")
			ch.AcceptGSO(sess.deliverGSO(gso, params.MTU))
		}
	}
	if cstp.IsKvpnAgent(req.UserAgent()) && creq.Extra.Get(cstp.HeaderGSODown) == "1" && s.gsoWriter() != nil {
		if params.Extra == nil {
			params.Extra = http.Header{}
		}
		params.Extra.Set(cstp.HeaderGSODown, "1")
		ch.SetPeerGSO()
		sess.gsoDown.Store(int32(params.MTU))
	}
	if cstp.IsKvpnAgent(req.UserAgent()) {
		// A fresh cookie that names the address just assigned, and how
		// often to renew it: vpnc can then resume on any node.
		if ticket, err := s.sealTicket(sess); err == nil {
			if params.Extra == nil {
				params.Extra = http.Header{}
			}
			params.Extra.Set("Set-Cookie", "webvpn="+ticket+"; Secure")
			params.Extra.Set(cstp.HeaderCookieRefresh, strconv.Itoa(int(s.refreshInterval()/time.Second)))
		} else {
			log.Warn("sealing cookie", "err", err)
		}
	}
	var hdr bytes.Buffer
	params.WriteResponse(&hdr)
	if _, err := conn.Write(hdr.Bytes()); err != nil {
		log.Info("writing CONNECT answer", "err", err)
		sess.detach(ch, err)
		conn.Close()
		return
	}
	if coalesce {
		conn.SetCoalesce(true)
	}
	// The tunnel has its own liveness checks from here on: DPD for the
	// reading side, and a write timeout for the writing side, so a client
	// that stops reading (its TCP window closed) cannot hold its session
	// and address for ever (TCP itself retries a zero window without end,
	// RFC 9293 3.8.6.1).
	conn.SetReadDeadline(time.Time{})
	conn.SetWriteDeadline(time.Time{})
	ch.SetWriteTimeout(s.tunnelWriteTimeout())
	log.Info("record layer", "engines", conn.Describe())
	up := []any{"address", addr.String(), "transport", ch.Name()}
	if addr6.IsValid() {
		up = append(up, "address6", addr6.String())
	}
	log.Info("tunnel up", up...)
	s.radiusTunnelUp(sess, addr) // RADIUS accounting Start (radius.go)
	s.connEvent(ctl.EventConnect, sess, conn.RemoteAddr().String(), ch.Name(), "")
	loggedIn()
	err = sess.run(cctx, ch, log)
	sess.detach(ch, err)
}

// offersPSKNegotiate reports whether the client's X-DTLS-CipherSuite lists
// PSK-NEGOTIATE, the only DTLS mode kvpn speaks.
func offersPSKNegotiate(suites string) bool {
	for _, s := range strings.Split(suites, ":") {
		if strings.TrimSpace(s) == "PSK-NEGOTIATE" {
			return true
		}
	}
	return false
}

// offerDTLS gives the session a fresh App-ID and the PSK exported from
// this TLS connection, and adds the X-DTLS headers to params.
func (s *Server) offerDTLS(sess *Session, conn record.Conn, params *cstp.TunnelParams, chacha, cid bool) error {
	psk, err := dtls.PSK(conn.ConnectionState())
	if err != nil {
		return err
	}
	var appID [dtls.AppIDLen]byte
	if _, err := rand.Read(appID[:]); err != nil {
		return err
	}
	sess.setDTLS(appID, psk, chacha, cid, nil)
	if chacha || cid {
		params.Extra = http.Header{}
	}
	if chacha {
		params.Extra.Set(cstp.HeaderDTLSCipher, cstp.ExtDTLSChaCha)
	}
	if cid {
		params.Extra.Set(cstp.HeaderDTLSCID, "1")
		// Connection-ID records are longer (the CID and the inner content
		// type): keep full-size packets within the link MTU.
		params.MTU -= dtls.CIDLen + 1
	}
	params.DTLSPort = s.dtlsPort()
	params.DTLSAppID = appID[:]
	params.DTLSCipherSuite = "PSK-NEGOTIATE"
	params.DTLSDPD = s.cfg.DPD
	params.DTLSKeepalive = s.cfg.Keepalive
	params.DTLSMTU = params.MTU
	return nil
}

// offerLegacyDTLS answers a client that wants the legacy AnyConnect DTLS
// (no PSK-NEGOTIATE in its lists): the session remembers the client's
// master secret and the chosen suite under a fresh X-DTLS-Session-ID,
// which the client's ClientHello resumes (dtls/legacy.go).
func (s *Server) offerLegacyDTLS(sess *Session, creq *cstp.ConnectRequest, params *cstp.TunnelParams, log *slog.Logger) error {
	ms, err := dtls.ParseMasterSecret(creq.DTLSMasterSecret)
	if err != nil {
		s.Counters.DTLSLegacyBadSecret.Add(1)
		return fmt.Errorf("%w (have %d characters)", err, len(creq.DTLSMasterSecret))
	}
	suite, ok, unknown := dtls.ChooseLegacySuite(creq.DTLSCipherSuite, creq.DTLS12CipherSuite)
	if !ok {
		s.Counters.DTLSLegacyNoSuite.Add(1)
		return fmt.Errorf("no suite vpnd can resume among X-DTLS-CipherSuite %q and X-DTLS12-CipherSuite %q",
			creq.DTLSCipherSuite, creq.DTLS12CipherSuite)
	}
	lg := &dtls.Legacy{Suite: suite, MasterSecret: ms}
	if _, err := rand.Read(lg.SessionID[:]); err != nil {
		return err
	}
	sess.setDTLS(lg.SessionID, nil, false, false, lg)
	if suite.Suite.CBC() {
		// A CBC record (IV, MAC, up to a block of padding) is longer than
		// a GCM one (explicit nonce, tag), which the MTU was sized for.
		params.MTU -= suite.Suite.Overhead() - dtlsrecord.TLS_RSA_WITH_AES_128_GCM_SHA256.Overhead()
	}
	params.DTLSPort = s.dtlsPort()
	params.DTLSSessionID = lg.SessionID[:]
	if suite.DTLS12 {
		params.DTLS12CipherSuite = suite.Name
	} else {
		params.DTLSCipherSuite = suite.Name
	}
	params.DTLSDPD = s.cfg.DPD
	params.DTLSKeepalive = s.cfg.Keepalive
	params.DTLSMTU = params.MTU
	log.Info("legacy DTLS offered", "suite", suite.Name, "version", suite.VersionName(), "unknown-suite-names", unknown)
	return nil
}

// dtlsOverhead is what a packet costs on a UDP link besides its own bytes:
// IPv4 20 + UDP 8 + DTLS 1.2 AES-GCM record 37 (13 header, 8 explicit
// nonce, 16 tag) + the CSTP type byte 1, as ocserv computes it.
const dtlsOverhead = 20 + 8 + 37 + 1

// tunnelMTU caps the configured MTU by what the client's link can carry
// (X-CSTP-Base-MTU), as ocserv does.
func tunnelMTU(configured, clientBase int) int {
	if clientBase > 0 && clientBase-dtlsOverhead < configured {
		return max(clientBase-dtlsOverhead, 576)
	}
	return configured
}

func remoteAddr(conn record.Conn) netip.Addr {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	return netip.Addr{}
}

// writeResponse writes a complete HTTP/1.1 response with a body.
func writeResponse(conn record.Conn, code int, ctype string, body []byte, extra http.Header) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	b.WriteString("Server: kvpn\r\n")
	if ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	if code >= 400 {
		b.WriteString("Connection: close\r\n")
	} else {
		b.WriteString("Connection: keep-alive\r\n")
	}
	for k, vs := range extra {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, strings.ReplaceAll(v, "\r\n", ""))
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	conn.SetWriteDeadline(time.Now().Add(loginTimeout))
	_, err := conn.Write(b.Bytes())
	return err
}

// Package server is vpnd's core: it accepts TLS connections, runs the
// OpenConnect login and CONNECT exchange, keeps the table of sessions and
// their tunnel addresses, and routes packets between the one TUN device and
// the sessions (dropping packets whose source a session does not own).
package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/auth"
	"kvpn/certs"
	"kvpn/cstp"
	"kvpn/dtls"
	"kvpn/netcfg"
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
func (s *Server) listenDTLS(addr string, sink session.PacketWriter) error {
	conns, err := udp.ListenGroup(addr, udp.GroupSize())
	if err != nil {
		return fmt.Errorf("udp-listen %s: %w", addr, err)
	}
	s.udp, s.udpReaders = conns[0], conns[1:]
	s.dtls = dtls.NewListener(dtls.ListenerConfig{Conn: conns[0], Readers: conns[1:], Find: s.findDTLS, Sink: sink, Log: s.log})
	return nil
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

// dtlsOverhead is what a packet costs on a UDP link besides its own bytes:
// IPv4 20 + UDP 8 + DTLS 1.2 AES-GCM record 37 (13 header, 8 explicit
// nonce, 16 tag) + the CSTP type byte 1, as ocserv computes it.
const dtlsOverhead = 20 + 8 + 37 + 1

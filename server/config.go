package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"kvpn/certs"
	"kvpn/cstp"
	"kvpn/ctl"
	"kvpn/internal/logging"
	"kvpn/ktlsbridge"
	"kvpn/radius"
	"kvpn/tun"
)

// Config is vpnd's configuration. Keys follow ocserv's names where ocserv
// has the same setting (ipv4-network, route, dns, dpd, keepalive, mtu,
// device, server-cert, server-key, cookie-timeout).
type Config struct {
	Listen        string   `toml:"listen"`     // TCP address for TLS
	UDPListen     string   `toml:"udp-listen"` // UDP address for DTLS (default: listen's; empty disables)
	ServerCert    string   `toml:"server-cert"`
	ServerKey     string   `toml:"server-key"`
	PasswdFile    string   `toml:"passwd-file"`
	IPv4Network   string   `toml:"ipv4-network"` // address pool, CIDR
	IPv6Network   string   `toml:"ipv6-network"` // optional IPv6 pool, CIDR (docs/ipv6.md)
	Route         []string `toml:"route"`        // split-include; empty or "default" = full tunnel
	NoRoute       []string `toml:"no-route"`     // split-exclude (routes.go)
	DNS           []string `toml:"dns"`
	DefaultDomain string   `toml:"default-domain"`
	MTU           int      `toml:"mtu"`
	DPD           int      `toml:"dpd"`            // seconds
	Keepalive     int      `toml:"keepalive"`      // seconds
	CookieTimeout int      `toml:"cookie-timeout"` // seconds a session outlives its connection
	Device        string   `toml:"device"`         // TUN interface name
	TunBackend    string   `toml:"tun-backend"`    // offload or plain
	LogLevel      string   `toml:"log-level"`      // debug, info, warn, error
	KTLS          string   `toml:"ktls"`           // auto, on, off
	// CookieKeyFile holds the key that seals session cookies; nodes that
	// share it resume each other's sessions (docs/scaling.md).
	CookieKeyFile string `toml:"cookie-key-file"`
	NodeName      string `toml:"node-name"`      // names this node in cookies and logs (default: host name)
	LogFormat     string `toml:"log-format"`     // text or json
	CtlSocket     string `toml:"ctl-socket"`     // control socket for vpnd ctl ("" disables)
	MetricsListen string `toml:"metrics-listen"` // Prometheus /metrics address ("" disables)

	// Privileges and access (access.go, cmd/vpnd/privileges.go).
	RunAsUser    string `toml:"run-as-user"`   // user vpnd runs as once set up ("": stays root)
	RunAsGroup   string `toml:"run-as-group"`  // its group (default: the user's primary group)
	CtlGroup     string `toml:"ctl-group"`     // group that may use the control socket besides root
	MetricsToken string `toml:"metrics-token"` // bearer token /metrics requires ("": none)

	// Login and session limits (limits.go). The ban and session keys are
	// ocserv's; 0 disables each.
	MaxBanScore            int `toml:"max-ban-score"`             // ban an address at this score
	BanResetTime           int `toml:"ban-reset-time"`            // seconds a score lasts
	BanPointsWrongPassword int `toml:"ban-points-wrong-password"` // score of a wrong password
	MaxClients             int `toml:"max-clients"`               // sessions in all
	MaxSameClients         int `toml:"max-same-clients"`          // sessions per user
	// Connections not logged in yet (accept to CONNECT), in all and per
	// source address (IPv6: per /64); beyond them a connection is closed
	// at once.
	MaxLoginConnections      int `toml:"max-login-connections"`
	MaxLoginConnectionsPerIP int `toml:"max-login-connections-per-ip"`

	// Issue #15 (hardening.go, scripts.go, isolate.go).
	// AuthTimeout (ocserv's auth-timeout) bounds a connection from accept
	// to its CONNECT: TLS handshake plus login, in seconds.
	AuthTimeout int `toml:"auth-timeout"`
	// LoginIdleTimeout closes a connection that has not logged in when it
	// sends nothing for this many seconds: before its TLS handshake, and
	// between its login requests.
	LoginIdleTimeout int `toml:"login-idle-timeout"`
	// MinReauthTime (ocserv's min-reauth-time) is how long an address that
	// reached max-ban-score stays banned, in seconds (0: until its score
	// resets at ban-reset-time).
	MinReauthTime             int `toml:"min-reauth-time"`
	BanPointsConnection       int `toml:"ban-points-connection"`        // a connection (given back at login)
	BanPointsMalformedRequest int `toml:"ban-points-malformed-request"` // a request that breaks the protocol
	// ConnectScript and DisconnectScript (ocserv's) run when a session's
	// tunnel first comes up and when the session ends; a connect-script
	// that fails refuses the session. ScriptTimeout bounds each run.
	ConnectScript    string `toml:"connect-script"`
	DisconnectScript string `toml:"disconnect-script"`
	ScriptTimeout    int    `toml:"script-timeout"`
	// IsolateClients forbids traffic between clients through vpnd; a
	// [users.NAME] table's isolate-clients overrides it for that user.
	IsolateClients bool `toml:"isolate-clients"`

	// RestrictUserToRoutes (ocserv's restrict-user-to-routes) drops
	// packets from a client to destinations outside the routes pushed to
	// it; a full-tunnel client may send anywhere.
	RestrictUserToRoutes bool `toml:"restrict-user-to-routes"`
	// SessionTimeout (ocserv's session-timeout) is the longest a session
	// may last from its password login, in seconds, however often its
	// cookie is refreshed or resumed; 0 = unlimited.
	SessionTimeout int `toml:"session-timeout"`
	// Auth lists the authentication methods every login must pass, as
	// ocserv's auth lines (AND-composed): "plain" (the password file, the
	// default), "certificate" (a client certificate verified against
	// ca-cert), or both. A single string or a list.
	Auth AuthMethods `toml:"auth"`
	// CACert is the PEM bundle of CAs that client certificates must chain
	// to; required with auth = "certificate".
	CACert string `toml:"ca-cert"`
	// CertUserOID names the certificate field holding the user name (as
	// ocserv's): a subject attribute OID (UID by default, CN 2.5.4.3) or
	// SAN(rfc822name) for the first e-mail subject alternative name.
	CertUserOID string `toml:"cert-user-oid"`
	// CRL is an optional file of certificate revocation lists (PEM or
	// DER), signed by a CA of ca-cert; re-read on reload.
	CRL string `toml:"crl"`
	// Users holds the per-user [users.NAME] tables (site-to-site).
	Users map[string]*UserConfig `toml:"users"`
	// Radius is the [radius] table: servers, secret and accounting for
	// auth = "radius" (server/radius.go, docs/authentication.md).
	Radius *radius.Config `toml:"radius"`

	// --- second factor and groups (issue #14; otp.go, groups.go) ---
	// OTPFile is a liboath users file (ocserv's plain[otp=...]): with it
	// every password login also needs a one-time password.
	OTPFile string `toml:"otp-file"`
	// OTPStateFile is where the used steps and counters are recorded
	// (default: STATE-DIR/otp-state).
	OTPStateFile string `toml:"otp-state-file"`
	// SelectGroup is the group list of the login form ("NAME" or
	// "NAME[Label]"); DefaultSelectGroup an entry before it meaning the
	// user's default group.
	SelectGroup        []string `toml:"select-group"`
	DefaultSelectGroup string   `toml:"default-select-group"`
	// CertGroupOID names the client certificate's subject attribute
	// holding a group (e.g. 2.5.4.11, OU).
	CertGroupOID string `toml:"cert-group-oid"`
	// Groups holds the per-group [groups.NAME] tables.
	Groups map[string]*GroupConfig `toml:"groups"`
	// --- end second factor and groups ---

	// Parsed forms, filled by Validate.
	pool   netip.Prefix
	pool6  netip.Prefix // invalid when ipv6-network is unset
	routes []netip.Prefix
	dns    []netip.Addr
	tunBE  tun.Backend
	ktls   ktlsbridge.Mode
	pol    *policy

	// noRoutes are the split-exclude routes (X-CSTP-Split-Exclude).
	noRoutes []netip.Prefix

	// authCert and authPlain: the methods of Auth (both false: plain).
	authCert, authPlain bool

	selectGroups []cstp.GroupOption // select-group, parsed (groups.go)
	// authRadius: auth includes "radius"; radius is the parsed [radius].
	authRadius bool
	radius     *radius.Parsed
}

// Defaults for a vpnd started without a configuration file.
const (
	DefaultListen        = "0.0.0.0:443"
	DefaultStateDir      = "/var/lib/kvpn"
	DefaultIPv4Network   = "10.77.0.0/24"
	DefaultDevice        = "kvpn0"
	DefaultDPD           = 60
	DefaultKeepalive     = 30
	DefaultCookieTimeout = 300 // as ocserv
	// DefaultSessionTimeout bounds a session to a day from its login: a
	// stolen cookie cannot be refreshed for ever (ocserv's default is
	// unlimited; kvpn's cookies are resumable on any node, so it bounds).
	DefaultSessionTimeout = 86400
	// DefaultMTU is what ocserv computes for a 1500-byte link with DTLS
	// (1500 - 20 IP - 8 UDP - 37 DTLS AES-GCM overhead - 1 type byte), so
	// the tunnel MTU does not change when traffic moves between DTLS and TLS.
	DefaultMTU = 1434

	// Ban scores as ocserv's defaults: the 8th wrong password within 20
	// minutes bans the address for the rest of them.
	DefaultMaxBanScore            = 80
	DefaultBanResetTime           = 1200 // seconds
	DefaultBanPointsWrongPassword = 10
	// DefaultMaxClients is the default pool's size (a /24): a default
	// install holds no more sessions than it has addresses for.
	DefaultMaxClients = 254
	// DefaultMaxSameClients is ocserv's sample configuration's value.
	DefaultMaxSameClients = 2
	// Connections not logged in yet: in all well below the usual file
	// descriptor limit, and per address enough for a few hundred users
	// logging in at once behind one NAT (issue #11: 200 openconnect
	// clients). A full bound closes its oldest connection still in its
	// TLS handshake before it refuses a newcomer (loginConns).
	DefaultMaxLoginConnections      = 1024
	DefaultMaxLoginConnectionsPerIP = 256

	// Issue #15. auth-timeout stays kvpn's 30 s (ocserv's default is
	// 240 s); min-reauth-time and the points are ocserv's defaults, with
	// 10 points for a malformed request (ocserv has no such event).
	DefaultAuthTimeout               = 30
	DefaultLoginIdleTimeout          = 10
	DefaultMinReauthTime             = 300
	DefaultBanPointsConnection       = 1
	DefaultBanPointsMalformedRequest = 10
	DefaultScriptTimeout             = 10
)

// DefaultConfig returns the built-in configuration, with files in stateDir.
func DefaultConfig(stateDir string) *Config {
	return &Config{
		Listen:        DefaultListen,
		UDPListen:     DefaultListen,
		ServerCert:    filepath.Join(stateDir, "server-cert.pem"),
		ServerKey:     filepath.Join(stateDir, "server-key.pem"),
		PasswdFile:    filepath.Join(stateDir, "passwd"),
		IPv4Network:   DefaultIPv4Network,
		MTU:           DefaultMTU,
		DPD:           DefaultDPD,
		Keepalive:     DefaultKeepalive,
		CookieTimeout: DefaultCookieTimeout,
		Device:        DefaultDevice,
		TunBackend:    string(tun.BackendOffload),
		LogLevel:      "info",
		KTLS:          string(ktlsbridge.ModeAuto),
		CookieKeyFile: filepath.Join(stateDir, "cookie-key"),
		LogFormat:     "text",
		CtlSocket:     ctl.DefaultSocket,

		MaxBanScore:              DefaultMaxBanScore,
		BanResetTime:             DefaultBanResetTime,
		BanPointsWrongPassword:   DefaultBanPointsWrongPassword,
		MaxClients:               DefaultMaxClients,
		MaxSameClients:           DefaultMaxSameClients,
		MaxLoginConnections:      DefaultMaxLoginConnections,
		MaxLoginConnectionsPerIP: DefaultMaxLoginConnectionsPerIP,
		SessionTimeout:           DefaultSessionTimeout,
		CertUserOID:              certs.OIDUID,
		OTPStateFile:             filepath.Join(stateDir, "otp-state"),

		AuthTimeout:               DefaultAuthTimeout,
		LoginIdleTimeout:          DefaultLoginIdleTimeout,
		MinReauthTime:             DefaultMinReauthTime,
		BanPointsConnection:       DefaultBanPointsConnection,
		BanPointsMalformedRequest: DefaultBanPointsMalformedRequest,
		ScriptTimeout:             DefaultScriptTimeout,
	}
}

// LoadConfig reads a TOML file over the defaults. Decoding is strict: an
// unknown key is an error that names the key and its line.
func LoadConfig(path, stateDir string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := DefaultConfig(stateDir)
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		var perr toml.ParseError
		var pperr *toml.ParseError
		switch {
		case errors.As(err, &perr):
			return nil, fmt.Errorf("%s:%d: %s", path, perr.Position.Line, perr.Message)
		case errors.As(err, &pperr):
			return nil, fmt.Errorf("%s:%d: %s", path, pperr.Position.Line, pperr.Message)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !md.IsDefined("udp-listen") {
		// DTLS listens on the TCP port unless told otherwise, as ocserv's
		// udp-port defaults to tcp-port.
		cfg.UDPListen = cfg.Listen
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return nil, fmt.Errorf("%s:%d: unknown key %q", path, keyLine(data, und[0]), k)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// keyLine finds the line where key is set. The TOML decoder keeps key
// positions private, so look for the key's last component at the start of
// a line; 0 if not found.
func keyLine(data []byte, key toml.Key) int {
	last := regexp.QuoteMeta(key[len(key)-1])
	re := regexp.MustCompile(`^\s*("?)` + last + `("?)\s*=`)
	for i, line := range bytes.Split(data, []byte("\n")) {
		if re.Match(line) {
			return i + 1
		}
	}
	return 0
}

// listenAddrs are the configured listen addresses, by key.
func (c *Config) listenAddrs() []listenAddr {
	return []listenAddr{{"listen", c.Listen}, {"udp-listen", c.UDPListen}}
}

// Validate checks every field and fills the parsed forms. Errors name the key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if c.UDPListen != "" {
		if _, _, err := net.SplitHostPort(c.UDPListen); err != nil {
			bad("udp-listen", "%v", err)
		}
	}
	pool, err := netip.ParsePrefix(c.IPv4Network)
	switch {
	case err != nil:
		bad("ipv4-network", "%v", err)
	case !pool.Addr().Is4():
		bad("ipv4-network", "%q is not an IPv4 network", c.IPv4Network)
	case pool.Bits() > 30:
		bad("ipv4-network", "%q is too small: need at least a /30", c.IPv4Network)
	case pool.Masked() != pool:
		bad("ipv4-network", "%q has host bits set (did you mean %s?)", c.IPv4Network, pool.Masked())
	default:
		c.pool = pool
	}
	plan := validateRoutes(c.Route, c.NoRoute, c.pool, c.listenAddrs(), bad)
	c.routes, c.noRoutes = plan.include, plan.exclude
	c.validateIPv6(bad)
	c.dns = c.dns[:0]
	for _, d := range c.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			bad("dns", "%v", err)
			continue
		}
		c.dns = append(c.dns, a)
	}
	if c.MTU < 576 || c.MTU > 9000 {
		bad("mtu", "%d is out of range 576..9000", c.MTU)
	}
	if c.DPD < 0 {
		bad("dpd", "must not be negative")
	}
	if c.Keepalive < 0 {
		bad("keepalive", "must not be negative")
	}
	if c.CookieTimeout < 0 {
		bad("cookie-timeout", "must not be negative")
	}
	if c.SessionTimeout < 0 {
		bad("session-timeout", "must not be negative (0 = unlimited)")
	}
	if c.Device == "" || len(c.Device) > 15 || strings.ContainsAny(c.Device, "/ \t") {
		bad("device", "%q is not a valid interface name", c.Device)
	}
	be, err := tun.ParseBackend(c.TunBackend)
	if err != nil {
		bad("tun-backend", "%v", err)
	}
	c.tunBE = be
	if m, err := ktlsbridge.ParseMode(c.KTLS); err != nil {
		bad("ktls", "%v", err)
	} else {
		c.ktls = m
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		bad("log-level", "%v", err)
	}
	if _, err := logging.ParseFormat(c.LogFormat); err != nil {
		bad("log-format", "%v", err)
	}
	if c.CtlSocket != "" && !filepath.IsAbs(c.CtlSocket) {
		bad("ctl-socket", "%q is not an absolute path", c.CtlSocket)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics-listen", "%v", err)
		}
	}
	c.validateGroups(bad) // before the policy, which builds the groups
	c.validateAccess(bad)
	c.pol = c.buildPolicy(bad)
	if c.ServerCert == "" || c.ServerKey == "" {
		bad("server-cert", "server-cert and server-key must both be set")
	}
	if c.PasswdFile == "" {
		bad("passwd-file", "must be set")
	}
	c.validateAuth(bad)
	if c.CookieKeyFile == "" {
		bad("cookie-key-file", "must be set")
	}
	for _, k := range []struct {
		key string
		v   int
	}{
		{"max-ban-score", c.MaxBanScore}, {"ban-reset-time", c.BanResetTime},
		{"ban-points-wrong-password", c.BanPointsWrongPassword},
		{"max-clients", c.MaxClients}, {"max-same-clients", c.MaxSameClients},
		{"max-login-connections", c.MaxLoginConnections}, {"max-login-connections-per-ip", c.MaxLoginConnectionsPerIP},
	} {
		if k.v < 0 {
			bad(k.key, "must not be negative (0 disables)")
		}
	}
	c.validateHardening(bad)
	if len(c.NodeName) > 255 {
		bad("node-name", "longer than 255 bytes")
	}
	return errors.Join(errs...)
}

func (c *Config) dpd() time.Duration { return time.Duration(c.DPD) * time.Second }
func (c *Config) cookieTimeout() time.Duration {
	return time.Duration(c.CookieTimeout) * time.Second
}

// sessionTimeout is session-timeout, 0 for unlimited.
func (c *Config) sessionTimeout() time.Duration {
	return time.Duration(c.SessionTimeout) * time.Second
}

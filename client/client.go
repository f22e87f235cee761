// Package client is vpnc's core: it logs in to an OpenConnect server,
// opens the tunnel, configures the local TUN interface, routes and DNS,
// pumps packets, reconnects with its cookie when the connection is lost,
// and undoes every change it made when it ends.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/cstp"
	"kvpn/dtls"
	"kvpn/internal/contain"
	"kvpn/ktlsbridge"
	"kvpn/netcfg"
	"kvpn/session"
	"kvpn/tun"
)

// Options configure a client. Names follow openconnect's flags.
type Options struct {
	Server     *url.URL // https://HOST[:PORT]
	User       string
	Password   string
	ServerCert string // pin-sha256:...
	CAFile     string
	// CertFile and KeyFile are the client certificate (chain) and its key,
	// PEM (-c/--certificate, -k/--sslkey; the key may be in CertFile). They
	// are presented in every TLS handshake, reconnects included.
	CertFile, KeyFile string
	// AskPassword, if set, is called for the password the first time a
	// login form asks for one while Password is empty (a certificate
	// login may need none).
	AskPassword func() (string, error)
	// AuthGroup is the group to log in to (--authgroup): sent in the
	// first request and picked in a form's group list.
	AuthGroup string
	// AskSecondary, if set, is called for a second factor (a one-time
	// password) when a form has a secondary_password input; label is
	// the form's label for it.
	AskSecondary func(label string) (string, error)
	Interface    string
	NoDTLS       bool
	KTLS         ktlsbridge.Mode // kernel TLS: auto, on or off
	// DTLSAttemptPeriod is how long after a failed or lost DTLS channel
	// the client tries DTLS again (openconnect: 60 s).
	DTLSAttemptPeriod time.Duration
	TunBackend        tun.Backend
	ReconnectTimeout  time.Duration
	ForceDPD          time.Duration // overrides the server's DPD when > 0
	BaseMTU           int
	ResolvConf        string // resolv.conf to edit for pushed DNS
	StateDir          string // where the DNS backup and the route journal live
	Log               *slog.Logger
	// DTLSChaCha asks a kvpn server for ChaCha20-Poly1305 DTLS (the
	// default where the CPU lacks AES instructions; dtls.PreferChaCha).
	DTLSChaCha bool
	// DTLSCID asks a kvpn server for DTLS connection IDs (RFC 9146), so
	// roaming needs no trial decryption (on unless KVPN_DTLS_CID=0).
	DTLSCID bool
	// DNSBackend is how pushed DNS is applied: auto (the default),
	// resolvconf, resolved or none (--dns-backend).
	DNSBackend netcfg.DNSBackend
	// Routes is what the user lets the server route (--no-routes,
	// --route-filter, --allow-ipv6-leak).
	Routes RoutePolicy
	// NoDNS leaves DNS alone whatever the server pushes (--no-dns).
	NoDNS bool

	// extensions is what the server listed in X-Kvpn-Extensions at login.
	extensions string
	// pinned is the server address and port the first connection reached
	// (dialTarget).
	pinned netip.AddrPort

	// OnUp, if set, is called once the tunnel is first up (tests, status).
	OnUp func(*cstp.TunnelParams, string)
}

func (o *Options) host() string { return o.Server.Hostname() }

func (o *Options) hostPort() string {
	if o.Server.Port() == "" {
		return o.Server.Hostname()
	}
	return o.Server.Host
}

func (o *Options) addr() string {
	port := o.Server.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(o.Server.Hostname(), port)
}

// ParseServerURL accepts https://HOST[:PORT][/], or a bare HOST[:PORT] as
// openconnect does.
func ParseServerURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("server URL %q: only https is supported", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("server URL %q has no host", s)
	}
	return u, nil
}

// login runs the XML login on c and returns the webvpn cookie. It fills
// every form the server sends (ocserv asks for the username and the
// password in two steps) and fails with ExitAuth when the server asks for
// the password again.
func (o *Options) login(c *conn) (string, error) {
	resp, body, err := c.post("/", cstp.InitRequestGroup(o.Server.String(), "v9.01", o.AuthGroup))
	if err != nil {
		if cerr := certRefusal(err); cerr != err {
			return "", cerr
		}
		return "", withCode(ExitUnreachable, err)
	}
	sentPassword := false
	for range 8 {
		if resp.StatusCode != http.StatusOK {
			return "", withCode(ExitAuth, statusError(resp, "login"))
		}
		msg, err := cstp.ParseServerMessage(body)
		if err != nil {
			return "", withCode(ExitAuth, fmt.Errorf("login: %w", err))
		}
		if msg.Type == "complete" {
			o.extensions = c.extensions
			cookie := c.cookies["webvpn"]
			if cookie == "" {
				return "", withCode(ExitAuth, errors.New("login: server reported success but sent no webvpn cookie"))
			}
			return cookie, nil
		}
		if msg.Type != "auth-request" {
			return "", withCode(ExitAuth, fmt.Errorf("login: unexpected %q document", msg.Type))
		}
		if o.Password == "" && o.AskPassword != nil && formAsksPassword(msg.Inputs) {
			pw, err := o.AskPassword()
			if err != nil {
				return "", withCode(ExitAuth, fmt.Errorf("reading password: %w", err))
			}
			o.Password = pw
		}
		fields, hasPassword := o.fillForm(msg.Inputs)
		if err := o.fillSecondary(fields); err != nil {
			return "", withCode(ExitAuth, err)
		}
		if err := o.pickGroup(fields, msg.Options); err != nil {
			return "", withCode(ExitAuth, err)
		}
		if hasPassword && sentPassword {
			reason := firstNonEmpty(msg.Error, msg.Message, "the server asked again")
			return "", withCode(ExitAuth, fmt.Errorf("authentication failed for user %q: %s", o.User, reason))
		}
		sentPassword = sentPassword || hasPassword
		action := msg.Action
		if action == "" {
			action = "/auth"
		}
		resp, body, err = c.post(action, cstp.AuthReply(fields, msg.Opaque))
		if err != nil {
			return "", withCode(ExitUnreachable, err)
		}
	}
	return "", withCode(ExitAuth, errors.New("login: too many form rounds"))
}

// fillForm answers a login form: text inputs get the username, password
// inputs the password, hidden and select inputs keep their value.
func (o *Options) fillForm(inputs []cstp.FormInput) ([]cstp.FormInput, bool) {
	out := make([]cstp.FormInput, 0, len(inputs))
	hasPassword := false
	for _, in := range inputs {
		switch in.Type {
		case "text":
			in.Value = o.User
		case "password":
			if in.Name == cstp.SecondaryPasswordField {
				break // fillSecondary
			}
			in.Value = o.Password
			hasPassword = true
		}
		out = append(out, in)
	}
	return out, hasPassword
}

// fillSecondary answers a form's second-factor input from AskSecondary.
func (o *Options) fillSecondary(fields []cstp.FormInput) error {
	for i, in := range fields {
		if in.Type != "password" || in.Name != cstp.SecondaryPasswordField {
			continue
		}
		if o.AskSecondary == nil {
			return errors.New("login: the server asks for a second factor (one-time password) and none can be read")
		}
		code, err := o.AskSecondary(in.Label)
		if err != nil {
			return fmt.Errorf("reading the one-time password: %w", err)
		}
		fields[i].Value = code
	}
	return nil
}

// pickGroup sets a form's group list to AuthGroup, which must be offered.
func (o *Options) pickGroup(fields []cstp.FormInput, options map[string][]string) error {
	if o.AuthGroup == "" {
		return nil
	}
	for i, in := range fields {
		if in.Type != "select" || in.Name != "group_list" {
			continue
		}
		if !slices.Contains(options[in.Name], o.AuthGroup) {
			return fmt.Errorf("login: group %q is not offered by the server (offered: %s)", o.AuthGroup, strings.Join(options[in.Name], ", "))
		}
		fields[i].Value = o.AuthGroup
	}
	return nil
}

// formAsksPassword reports whether a login form has a password input
// (other than a second factor's).
func formAsksPassword(inputs []cstp.FormInput) bool {
	for _, in := range inputs {
		if in.Type == "password" && in.Name != cstp.SecondaryPasswordField {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// errCookieRefused means the server no longer knows our session.
var errCookieRefused = errors.New("server refused the session cookie")

// connect sends CONNECT on c and returns the tunnel parameters.
func (o *Options) connect(c *conn, cookie string, prev netip.Addr, prev6 netip.Prefix) (*cstp.TunnelParams, error) {
	req := &cstp.ConnectRequest{
		Cookie:         cookie,
		Hostname:       hostname(),
		BaseMTU:        o.BaseMTU,
		MTU:            o.BaseMTU - 110,
		PrevAddress:    prev,
		PrevAddressIP6: prev6,
	}
	if cstp.HasExtension(o.extensions, cstp.ExtCoalesce) {
		req.Extra = http.Header{}
		req.Extra.Set(cstp.HeaderCoalesce, "1")
	}
	if o.wantGSO() && cstp.HasExtension(o.extensions, cstp.ExtGSO) {
		if req.Extra == nil {
			req.Extra = http.Header{}
		}
		req.Extra.Set(cstp.HeaderGSO, "1")
	}
	if o.wantGSO() && cstp.HasExtension(o.extensions, cstp.ExtGSODown) {
		if req.Extra == nil {
			req.Extra = http.Header{}
		}
		req.Extra.Set(cstp.HeaderGSODown, "1")
	}
	if !o.NoDTLS {
		req.DTLSCipherSuite = "PSK-NEGOTIATE"
		if o.DTLSCID && cstp.HasExtension(o.extensions, cstp.ExtDTLSCID) {
			if req.Extra == nil {
				req.Extra = http.Header{}
			}
			req.Extra.Set(cstp.HeaderDTLSCID, "1")
		}
		if o.DTLSChaCha && cstp.HasExtension(o.extensions, cstp.ExtDTLSChaCha) {
			if req.Extra == nil {
				req.Extra = http.Header{}
			}
			req.Extra.Set(cstp.HeaderDTLSCipher, cstp.ExtDTLSChaCha)
		}
	}
	var b bytes.Buffer
	if err := req.WriteTo(&b, c.host); err != nil {
		return nil, err
	}
	c.rc.SetDeadline(time.Now().Add(exchangeTimeout))
	if _, err := c.rc.Write(b.Bytes()); err != nil {
		return nil, err
	}
	resp, err := cstp.ReadResponse(c.br, http.MethodConnect)
	if err != nil {
		return nil, fmt.Errorf("reading CONNECT answer: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return nil, errCookieRefused
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp, "CONNECT")
	}
	p, err := cstp.ParseTunnelParams(resp.Header)
	if err != nil {
		return nil, err
	}
	// vpnd renews the cookie with the address just assigned (resume.go).
	for _, ck := range resp.Cookies() {
		if ck.Name == "webvpn" && ck.Value != "" {
			c.cookies["webvpn"] = ck.Value
		}
	}
	if p.Extra.Get(cstp.HeaderCoalesce) == "1" {
		c.rc.SetCoalesce(true)
	}
	c.rc.SetDeadline(time.Time{})
	return p, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "kvpn"
	}
	return h
}

// Run connects, brings the tunnel up and keeps it up until ctx ends (a
// clean exit: DISCONNECT is sent) or the tunnel is lost for good. Every
// change to the system is undone before Run returns.
func Run(ctx context.Context, o *Options) error {
	log := o.Log
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return withCode(ExitUsage, err)
	}
	unlock, err := o.lockInstance()
	if err != nil {
		return withCode(ExitUsage, err)
	}
	defer unlock()
	o.recoverCrashedRun()
	c, err := o.dial(ctx, tlsCfg)
	if err != nil {
		return err
	}
	cookie, err := o.login(c)
	if err != nil {
		c.close()
		return err
	}
	params, err := o.connect(c, cookie, netip.Addr{}, netip.Prefix{})
	if err != nil {
		c.close()
		if errors.Is(err, errCookieRefused) {
			return withCode(ExitAuth, err)
		}
		return withCode(ExitUnreachable, err)
	}
	params, err = o.check(params, "", remoteIP(c))
	if err != nil {
		c.close()
		return withCode(ExitUnreachable, err)
	}
	ch, err := newChannel(c, params, params.MTU)
	if err != nil {
		c.close()
		return err
	}
	t := &tunnel{o: o, log: log, tlsCfg: tlsCfg, cookie: cookie, params: params, server: remoteIP(c)}
	t.acceptGSO(ch, params)
	t.connected(c, params)
	if ta, ok := c.rc.RemoteAddr().(*net.TCPAddr); ok && t.server.IsValid() {
		o.pinned = netip.AddrPortFrom(t.server, uint16(ta.Port))
	}
	if err := t.up(); err != nil {
		ch.Disconnect("setup failed")
		t.down()
		return err
	}
	log.Info("record layer", "engines", c.rc.Describe())
	return t.serve(ctx, ch, t.dtlsOffer(c, params))
}

// serve runs the tunnel that up configured, over ch (DTLS as offer says),
// until ctx ends or the tunnel is lost for good, and then undoes what up
// did (down).
//
// A panic in any of the tunnel's goroutines is recovered, logged with its
// stack and counted (guard); it ends the tunnel like a user's exit (the
// server is told, routes and DNS are restored) and serve returns it as an
// error with ExitTunnelLost, rather than the process dying with the
// system's network still pointed at the tunnel.
func (t *tunnel) serve(parent context.Context, ch *session.CSTPChannel, offer *dtlsParams) (err error) {
	defer t.down()
	ctx, fail := context.WithCancelCause(parent)
	defer fail(nil)
	t.fail = fail
	defer func() {
		// A panic in this goroutine (the reconnect loop): down still
		// runs, after this.
		if v := recover(); v != nil {
			err = &Error{Code: ExitTunnelLost, Err: contain.Recovered(t.log, "tunnel loop", v, &t.panics)}
		}
	}()
	params := t.params
	t.cur.Store(ch)
	go t.guard("downlink", func() error { t.downlink(); return nil })
	dctx, stopDTLS := context.WithCancel(ctx)
	up := t.startDTLS(dctx, offer)
	// The up line names the transport, so it waits for the first DTLS
	// attempt (up to dtlsHandshakeTimeout); the TLS channel is served
	// meanwhile: a server with a short DPD must get its answers, and its
	// packets must not pile up unread.
	go t.guard("status", func() error {
		select {
		case <-up:
		case <-ctx.Done():
			return nil
		}
		transport := "none (reconnecting)"
		if s := t.sender(); s != nil {
			transport = s.Name()
		}
		t.log.Info(fmt.Sprintf("tunnel up: address %s/%d%s, MTU %d, routes %s, DNS %s, transport %s",
			params.Address, maskBits(params.Netmask), t.ipv6Desc(), params.MTU, t.routeDesc(), addrList(params.DNS), transport))
		if t.o.OnUp != nil {
			t.o.OnUp(params, transport)
		}
		return nil
	})
	rctx, stopRefresh := context.WithCancel(ctx)
	defer stopRefresh()
	go t.guard("cookie refresh", func() error { t.refreshCookie(rctx); return nil })
	err = t.loop(ctx, ch, stopDTLS)
	var pe *contain.PanicError
	if errors.As(context.Cause(ctx), &pe) {
		return &Error{Code: ExitTunnelLost, Err: fmt.Errorf("tunnel shut down after an internal error: %w", pe)}
	}
	return err
}

// guard runs f, the body of one of the tunnel's goroutines, and returns
// its error. A panic in f is recovered, logged with its stack, counted,
// and returned; it also ends the tunnel (serve's context, cancelled with
// the panic as its cause), whose state is no longer to be trusted.
func (t *tunnel) guard(where string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := contain.Recovered(t.log, where, v, &t.panics)
			if t.fail != nil {
				t.fail(pe)
			}
			err = pe
		}
	}()
	return f()
}

func (o *Options) dnsBackup() string {
	return filepath.Join(o.instanceDir(), "resolv.conf.kvpn-backup")
}

func (o *Options) stateDir() string {
	if o.StateDir == "" {
		return os.TempDir()
	}
	return o.StateDir
}

// check validates a CONNECT answer (checkParams) against the host's
// addresses (without those of the tunnel device tunIf, on a reconnect)
// and logs what it leaves out.
func (o *Options) check(p *cstp.TunnelParams, tunIf string, server netip.Addr) (*cstp.TunnelParams, error) {
	host, err := netcfg.HostAddrs(tunIf)
	if err != nil {
		return nil, err
	}
	np, warns, err := checkParams(p, host, server)
	if err != nil {
		return nil, fmt.Errorf("refusing the server's tunnel parameters: %w", err)
	}
	// The server controls how many items there are: a few lines, then
	// one count.
	const maxWarns = 8
	for i, w := range warns {
		if i == maxWarns {
			o.Log.Warn(fmt.Sprintf("ignoring %d more unusable items pushed by the server", len(warns)-maxWarns))
			break
		}
		o.Log.Warn(w)
	}
	return np, nil
}

// tunnel is a running client tunnel.
type tunnel struct {
	o      *Options
	log    *slog.Logger
	tlsCfg *tls.Config
	params *cstp.TunnelParams

	// cookie is the session cookie, renewed by the server on CONNECT and
	// by refreshCookie (guarded by cookieMu).
	cookieMu sync.Mutex
	cookie   string
	// refreshEvery is how often the server wants the cookie renewed
	// (X-Kvpn-Cookie-Refresh), 0 if it does not.
	refreshEvery atomic.Int64
	// lastParams is the latest CONNECT answer (it carries the DTLS offer
	// of the current TLS connection).
	lastParams *cstp.TunnelParams
	dev        tun.Device
	changes    *netcfg.Changes
	plan       routePlan      // the routes applyRoutes installed
	routes6    []netip.Prefix // the pushed IPv6 routes (ipv6.go)
	// server is the address the TLS connection reached, pinned outside
	// the tunnel.
	server netip.Addr

	cur       atomic.Pointer[session.CSTPChannel]
	dtls      atomic.Pointer[dtls.ClientChannel]
	downDone  chan struct{}
	closeOnce sync.Once

	// fail ends serve after a panic in one of the tunnel's goroutines
	// (guard); set by serve before it starts them.
	fail context.CancelCauseFunc
	// Failures contained (issue #12): recovered panics, and failed TUN
	// reads of the downlink, each followed by a backoff (lastReadLog
	// rate-limits their log line).
	panics, readErrors atomic.Uint64
	lastReadLog        time.Time
	// testPanic, nil but in tests, is called by the downlink after each
	// TUN read that returned packets, so a test can make it panic.
	testPanic func(where string)
}

// fullTunnel is how a default route is installed: two halves that are more
// specific than any existing default route, so the original one need not
// be touched and comes back by itself when ours are deleted.
var fullTunnel = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}

// up creates and configures the TUN interface, routes and DNS.
func (t *tunnel) up() error {
	p := t.params
	t.changes = netcfg.New()
	dev, err := tun.Create(t.o.Interface, p.MTU, t.o.TunBackend)
	if err != nil {
		return withCode(ExitTunnelLost, fmt.Errorf("creating TUN device: %w", err))
	}
	t.dev = dev
	t.downDone = make(chan struct{})
	name := dev.Name()
	// No IPv6 was assigned: keep the kernel from sending router
	// solicitations and MLD reports into the tunnel.
	if !p.AddressIP6.IsValid() {
		os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	}
	if err := t.changes.SetLink(name, netip.PrefixFrom(p.Address, maskBits(p.Netmask)), p.MTU); err != nil {
		return withCode(ExitTunnelLost, err)
	}
	if err := t.upIPv6(name); err != nil {
		return withCode(ExitTunnelLost, err)
	}
	if err := t.applyRoutes(name); err != nil {
		return err
	}
	return t.applyDNS(name)
}

// down undoes everything up did, in reverse order.
func (t *tunnel) down() {
	t.closeOnce.Do(func() {
		if t.changes != nil {
			if err := t.changes.Restore(); err != nil {
				t.log.Warn("restoring network settings", "err", err)
			}
		}
		if t.dev != nil {
			t.dev.Close()
			if t.downDone != nil {
				select {
				case <-t.downDone:
				case <-time.After(2 * time.Second):
				}
			}
		}
	})
}

func (t *tunnel) routeDesc() string { return t.plan.describe() }

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, ",")
}

func maskBits(m netip.Addr) int {
	if !m.Is4() {
		return 32
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for v&0x80000000 != 0 {
		n++
		v <<= 1
	}
	return n
}

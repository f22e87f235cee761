// Package client is vpnc's core: it logs in to an OpenConnect server,
// opens the tunnel, configures the local TUN interface, routes and DNS,
// pumps packets, reconnects with its cookie when the connection is lost,
// and undoes every change it made when it ends.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kvpn/cstp"
	"kvpn/ktlsbridge"
	"kvpn/netcfg"
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

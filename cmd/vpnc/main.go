//go:build linux

// Command vpnc is the kvpn client: it connects to an OpenConnect server
// (kvpn's vpnd or a stock ocserv), brings up a TUN interface with the
// address, routes and DNS the server pushes, and restores everything on exit.
//
//	vpnc connect [flags] https://HOST[:PORT]
//
// Exit codes: 0 clean exit, 2 usage (or another vpnc on the interface), 3
// authentication failed, 4 server unreachable, certificate mismatch or
// unusable tunnel addresses, 5 tunnel lost.

// OpenConnect's DTLS key is a TLS exporter; Go refuses it over TLS 1.2
// without extended master secret, which ocserv's %COMPAT disables (see
// dtls.PSK).
//
//go:debug tlsunsafeekm=1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"kvpn/client"
	"kvpn/dtls"
	"kvpn/internal/cli"
	"kvpn/internal/logging"
	"kvpn/ktlsbridge"
	"kvpn/netcfg"
	"kvpn/tun"
)

const usage = `usage: vpnc connect [flags] https://HOST[:PORT]

flags (named as openconnect's):
  -u, --user NAME            username (not needed when a client certificate names the user)
      --passwd-on-stdin      read the password from standard input (its first line; a one-time
                             password the server asks for next is read from the following line)
      --authgroup GROUP      log in to GROUP of the server's group list (select-group)
  -c, --certificate FILE     client certificate, PEM (the key may follow it in the same file)
  -k, --sslkey FILE          the client certificate's private key, PEM
      --servercert PIN       accept only a server certificate with this pin-sha256:...
      --cafile FILE          trust the CA certificates in FILE
  -i, --interface NAME       TUN interface name (default kvpnc0)
      --no-dtls              use TLS only (default: DTLS when the server offers it, TLS as fallback)
      --dtls-attempt-period S  retry DTLS S seconds after it failed or was lost (default 60)
      --tun-backend B        offload (default) or plain
      --ktls MODE            kernel TLS: auto (default), on, off
      --reconnect-timeout S  keep trying to reconnect with the session cookie for S seconds (default 300)
      --force-dpd S          dead-peer-detection interval, overriding the server's
      --base-mtu N           link MTU to the server (default 1500)
      --state-dir DIR        where undo records live, in DIR/INTERFACE (default /run/kvpn);
                             a run killed without cleaning up is undone by the next start on
                             the same interface, and a second vpnc on that interface is refused
      --dns-backend B        how pushed DNS is applied: auto (default: resolved if
                             /etc/resolv.conf points at its 127.0.0.53 stub and resolvectl
                             exists, else resolvconf), resolvconf, resolved, none
      --no-dns               do not apply the DNS servers and search domain the server pushes
      --no-routes            accept the tunnel address but install none of the pushed routes
                             (nor the full tunnel); route into the tunnel yourself
      --route-filter CIDRS   install only the pushed routes inside these prefixes
                             (comma-separated, e.g. 10.0.0.0/8,fd00::/8; 0.0.0.0/0 admits a full tunnel)
      --allow-ipv6-leak      in a full IPv4 tunnel without IPv6, do not block IPv6
                             (by default it is made unreachable while the tunnel is up)
      --log-level L          debug, info, warn, error (default info)
      --log-format F         text (default) or json

exit codes: 0 clean exit, 2 usage (or another vpnc on the interface), 3 authentication failed
            (or session cookie refused on reconnect), 4 server unreachable, certificate mismatch or
            unusable tunnel addresses from the server, 5 tunnel lost,
            6 --ktls on but the kernel cannot take the connection
`

func main() { cli.Main("vpnc", run) }

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return client.ExitUsage
	}
	switch args[0] {
	case "connect":
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vpnc: unknown command %q\n%s", args[0], usage)
		return client.ExitUsage
	}
	o, err := parseConnect(args[1:], stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vpnc: %v\n", err)
		return client.ExitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = client.Run(ctx, o)
	if err != nil {
		o.Log.Error("vpnc: " + err.Error())
	}
	return client.ExitCode(err)
}

func parseConnect(args []string, stderr io.Writer) (*client.Options, error) {
	fs := flag.NewFlagSet("vpnc connect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var authGroup string
	var user, servercert, cafile, iface, backend, stateDir, level, dnsBackend, certFile, keyFile string
	var stdinPass, noDTLS, noDNS, noRoutes, allowLeak bool
	var routeFilter string
	var ktlsMode, logFormat string
	var reconnect, forceDPD, baseMTU, dtlsPeriod int
	for _, n := range []string{"u", "user"} {
		fs.StringVar(&user, n, "", "")
	}
	for _, n := range []string{"i", "interface"} {
		fs.StringVar(&iface, n, "kvpnc0", "")
	}
	for _, n := range []string{"c", "certificate"} {
		fs.StringVar(&certFile, n, "", "")
	}
	for _, n := range []string{"k", "sslkey"} {
		fs.StringVar(&keyFile, n, "", "")
	}
	fs.BoolVar(&stdinPass, "passwd-on-stdin", false, "")
	fs.StringVar(&authGroup, "authgroup", "", "")
	fs.StringVar(&servercert, "servercert", "", "")
	fs.StringVar(&cafile, "cafile", "", "")
	fs.BoolVar(&noDTLS, "no-dtls", false, "")
	fs.StringVar(&backend, "tun-backend", string(tun.BackendOffload), "")
	fs.StringVar(&ktlsMode, "ktls", string(ktlsbridge.ModeAuto), "")
	fs.IntVar(&reconnect, "reconnect-timeout", 300, "")
	fs.IntVar(&dtlsPeriod, "dtls-attempt-period", 60, "")
	fs.IntVar(&forceDPD, "force-dpd", 0, "")
	fs.IntVar(&baseMTU, "base-mtu", 1500, "")
	fs.StringVar(&stateDir, "state-dir", "/run/kvpn", "")
	fs.StringVar(&level, "log-level", "info", "")
	fs.StringVar(&dnsBackend, "dns-backend", string(netcfg.DNSAuto), "")
	fs.StringVar(&logFormat, "log-format", "text", "")
	fs.BoolVar(&noDNS, "no-dns", false, "")
	fs.BoolVar(&noRoutes, "no-routes", false, "")
	fs.StringVar(&routeFilter, "route-filter", "", "")
	fs.BoolVar(&allowLeak, "allow-ipv6-leak", false, "")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return nil, fmt.Errorf("%v (see vpnc --help)", err)
	}
	if len(pos) != 1 {
		return nil, errors.New("want exactly one server URL (see vpnc --help)")
	}
	u, err := client.ParseServerURL(pos[0])
	if err != nil {
		return nil, err
	}
	be, err := tun.ParseBackend(backend)
	if err != nil {
		return nil, err
	}
	km, err := ktlsbridge.ParseMode(ktlsMode)
	if err != nil {
		return nil, err
	}
	dnsBE, err := netcfg.ParseDNSBackend(dnsBackend)
	if err != nil {
		return nil, fmt.Errorf("--dns-backend: %v", err)
	}
	policy := client.RoutePolicy{NoRoutes: noRoutes, AllowIPv6Leak: allowLeak}
	if routeFilter != "" {
		if noRoutes {
			return nil, errors.New("--route-filter and --no-routes exclude each other")
		}
		if policy.Filter, err = client.ParseRouteFilter(routeFilter); err != nil {
			return nil, fmt.Errorf("--route-filter: %v", err)
		}
	}
	log, err := logging.NewFormat(stderr, level, logFormat)
	if err != nil {
		return nil, err
	}
	if keyFile != "" && certFile == "" {
		return nil, errors.New("-k/--sslkey needs -c/--certificate")
	}
	if user == "" && certFile == "" {
		return nil, errors.New("-u/--user is required (or -c/--certificate)")
	}
	if reconnect < 0 || forceDPD < 0 || dtlsPeriod < 1 || baseMTU < 576 || baseMTU > 9000 {
		return nil, errors.New("--reconnect-timeout and --force-dpd must not be negative, --dtls-attempt-period must be positive, --base-mtu must be 576..9000")
	}
	var pw string
	var ask func() (string, error)
	// A one-time password the server asks for after the password: the
	// next line of standard input with --passwd-on-stdin, else a prompt.
	askSecondary := func(label string) (string, error) {
		if stdinPass {
			return readLineUnbuffered(os.Stdin)
		}
		if label == "" {
			label = "One-time password:"
		}
		return cli.ReadPassword(label+" ", false)
	}
	switch {
	case stdinPass:
		// Unbuffered: the line after it may hold the one-time password.
		pw, err = readLineUnbuffered(os.Stdin)
	case certFile != "":
		// The certificate may be the whole login: prompt only if the
		// server asks for a password.
		ask = func() (string, error) { return cli.ReadPassword("Password: ", false) }
	default:
		pw, err = cli.ReadPassword("Password for "+user+": ", false)
	}
	if err != nil {
		return nil, fmt.Errorf("reading password: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	return &client.Options{
		Server:            u,
		User:              user,
		Password:          pw,
		AskPassword:       ask,
		AskSecondary:      askSecondary,
		AuthGroup:         authGroup,
		CertFile:          certFile,
		KeyFile:           keyFile,
		ServerCert:        servercert,
		CAFile:            cafile,
		Interface:         iface,
		NoDTLS:            noDTLS,
		DTLSAttemptPeriod: time.Duration(dtlsPeriod) * time.Second,
		DTLSChaCha:        dtls.PreferChaCha(),
		DTLSCID:           os.Getenv("KVPN_DTLS_CID") != "0",
		TunBackend:        be,
		KTLS:              km,
		ReconnectTimeout:  time.Duration(reconnect) * time.Second,
		ForceDPD:          time.Duration(forceDPD) * time.Second,
		BaseMTU:           baseMTU,
		ResolvConf:        "/etc/resolv.conf",
		StateDir:          stateDir,
		DNSBackend:        dnsBE,
		Routes:            policy,
		NoDNS:             noDNS,
		Log:               log,
	}, nil
}

// readLineUnbuffered reads one line from r a byte at a time, so that what
// follows it stays unread for the next call.
func readLineUnbuffered(r io.Reader) (string, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
			if len(line) > 4096 {
				return "", errors.New("line on standard input too long")
			}
			continue
		}
		if err == io.EOF {
			if len(line) == 0 {
				return "", errors.New("no more lines on standard input")
			}
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimRight(string(line), "\r"), nil
}

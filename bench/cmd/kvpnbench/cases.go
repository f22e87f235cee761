//go:build linux

package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvpn/bench"
	"kvpn/internal/harness"
)

// Addresses. The veth link is 192.168.203.0/24; vpnd's pool
// 10.203.0.0/24 (server 10.203.0.1), ocserv's 10.204.0.0/24 (ocserv's
// end of every point-to-point tun is 10.204.0.1). Both push a split route
// so nothing else in the client namespace changes.
const (
	srvVeth      = "192.168.203.1"
	cliVeth      = "192.168.203.2"
	vpndPool     = "10.203.0.0/24"
	vpndTunnelIP = "10.203.0.1"
	ocservPool   = "10.204.0.0/24"
	ocservTunIP  = "10.204.0.1"
	splitRoute   = "10.99.0.0/16"
	benchUser    = "bench"
	benchPass    = "bench-password-1"
	vpncScript   = "/usr/share/vpnc-scripts/vpnc-script"
	iperfPort    = "5201"
)

// topo is one case's pair of namespaces and its working directory.
type topo struct {
	dir      string
	srv, cli *harness.NS
	cliVeth  string // the client's veth device
}

// tunnel is what a case's setup brought up.
type tunnel struct {
	addr             string // the iperf3 server binds here (server namespace)
	srvComm, cliComm string // process name prefixes for CPU accounting; "" = none
	cliIf            string // client interface, for the MTU
	negotiated       string
	engine           string
	notes            []string
}

func (r *runner) newTopo(name string) (*topo, error) {
	dir, err := os.MkdirTemp("", "kvpnbench-"+name+"-")
	if err != nil {
		return nil, err
	}
	r.onCleanup("remove "+dir, func() { os.RemoveAll(dir) })
	// ocserv's workers run as the ocserv user and must reach sec-mod's
	// socket in here.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	t := &topo{dir: dir}
	if t.srv, err = r.newNS("srv"); err != nil {
		return nil, err
	}
	if t.cli, err = r.newNS("cli"); err != nil {
		return nil, err
	}
	id := harness.RandHex(3)
	a, b := "kvb"+id+"s", "kvb"+id+"c"
	t.cliVeth = b
	ctx, cancel := context.WithTimeout(r.ctx, 60*time.Second)
	defer cancel()
	if err := harness.Link(ctx, r, harness.End{NS: t.srv, Dev: a, Addr: srvVeth + "/24"},
		harness.End{NS: t.cli, Dev: b, Addr: cliVeth + "/24"}); err != nil {
		return nil, err
	}
	return t, nil
}

// runCase sets up one case, measures it and tears it down again.
func (r *runner) runCase(info bench.CaseInfo) *bench.Case {
	c := &bench.Case{CaseInfo: info, CPU: info.Transport != ""}
	r.logf("== %s: %s (server %s, client %s)", info.Name, info.Title, info.Server, info.Client)
	m, np := r.mark(), r.procCount()
	defer func() {
		procs := r.procsSince(np)
		for _, p := range procs {
			if note := instability(p.Name, p.Out.String()); note != "" {
				c.Notes = append(c.Notes, "WARNING: "+note)
				r.logf("   WARNING: %s", note)
			}
		}
		// On failure (or with BENCH_DEBUG=1) show what the VPN processes said.
		if c.Err != "" || os.Getenv("BENCH_DEBUG") == "1" {
			for _, p := range procs {
				if strings.HasPrefix(p.Name, "iperf3") {
					continue
				}
				fmt.Fprintf(os.Stderr, "----- last output of %s -----\n%s\n", p.Name, harness.Tail(p.Out.String(), 25))
			}
		}
		r.unwindTo(m)
		r.logf("   %s: cleaned up", info.Name)
	}()
	if err := r.measureCase(c); err != nil {
		if r.ctx.Err() != nil {
			return c
		}
		c.Err = firstLine(err.Error())
		r.logf("   %s FAILED: %v", info.Name, err)
	}
	return c
}

var (
	vpncReconnect = regexp.MustCompile(`tunnel re-established`)
	vpncDTLSLost  = regexp.MustCompile(`DTLS lost`)
	vpndLost      = regexp.MustCompile(`msg="connection lost[^\n]*`)
	logErr        = regexp.MustCompile(`\berr=("[^"]*"|\S+)`)
	ocCSTP        = regexp.MustCompile(`CSTP connected`)
	ocDTLSDead    = regexp.MustCompile(`DTLS Dead Peer Detection detected dead peer`)
)

// instability reads a VPN process's output for signs that the tunnel did
// not stay up during the measurements: reconnects, lost connections, DTLS
// falling back. It returns "" when there are none.
func instability(name, out string) string {
	var parts []string
	switch name {
	case "vpnc":
		if n := len(vpncReconnect.FindAllString(out, -1)); n > 0 {
			parts = append(parts, fmt.Sprintf("re-established the tunnel %d times", n))
		}
		if n := len(vpncDTLSLost.FindAllString(out, -1)); n > 0 {
			parts = append(parts, fmt.Sprintf("lost DTLS %d times", n))
		}
	case "vpnd":
		if lines := vpndLost.FindAllString(out, -1); len(lines) > 0 {
			s := fmt.Sprintf("lost the client's connection %d times", len(lines))
			if e := logErr.FindStringSubmatch(lines[0]); e != nil {
				s += " (first error: " + strings.Trim(e[1], `"`) + ")"
			}
			parts = append(parts, s)
		}
	case "openconnect":
		if n := len(ocCSTP.FindAllString(out, -1)); n > 1 {
			parts = append(parts, fmt.Sprintf("reconnected %d times", n-1))
		}
		if n := len(ocDTLSDead.FindAllString(out, -1)); n > 0 {
			parts = append(parts, fmt.Sprintf("declared DTLS dead %d times", n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return name + " " + strings.Join(parts, ", ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (r *runner) measureCase(c *bench.Case) error {
	t, err := r.newTopo(c.Name)
	if err != nil {
		return err
	}
	var tn *tunnel
	switch c.Name {
	case "veth":
		tn = &tunnel{addr: srvVeth, cliIf: t.cliVeth, negotiated: "none (plain veth)"}
	case "kvpn-dtls":
		tn, err = r.setupKvpn(t, "offload", true)
	case "kvpn-tls":
		tn, err = r.setupKvpn(t, "offload", false)
	case "kvpn-plain":
		tn, err = r.setupKvpn(t, "plain", true)
	case "ocserv-dtls":
		tn, err = r.setupOcserv(t, true)
	case "ocserv-tls":
		tn, err = r.setupOcserv(t, false)
	case "oc-vpnd-dtls":
		tn, err = r.setupOpenconnectVpnd(t, true)
	case "oc-vpnd-tls":
		tn, err = r.setupOpenconnectVpnd(t, false)
	case bench.LegacyOcservCase:
		tn, err = r.setupOcserv(t, true, legacyArgs...)
	case "oc-vpnd-legacy":
		tn, err = r.setupOpenconnectVpnd(t, true, legacyArgs...)
	default:
		err = fmt.Errorf("no setup for case %q", c.Name)
	}
	if err != nil {
		return err
	}
	if c.Reference() == bench.LegacyOcservCase && strings.Contains(tn.negotiated, "PSK") {
		return fmt.Errorf("openconnect negotiated %s, not the legacy DTLS it asked for", tn.negotiated)
	}
	c.Negotiated, c.Engine = tn.negotiated, tn.engine
	c.Notes = append(c.Notes, tn.notes...)
	if out, err := r.cmd(t.cli, 5*time.Second, "ip", "-o", "link", "show", "dev", tn.cliIf); err == nil {
		if m := regexp.MustCompile(`\bmtu (\d+)`).FindStringSubmatch(out); m != nil {
			c.MTU, _ = strconv.Atoi(m[1])
		}
	}
	r.logf("   up: transport %s, MTU %d", c.Negotiated, c.MTU)
	if c.Engine != "" {
		r.logf("   record layer: %s", c.Engine)
	}
	if err := harness.Eventually(r.ctx, 15*time.Second, "ping through the tunnel", func() error {
		_, err := r.cmd(t.cli, 5*time.Second, "ping", "-c", "1", "-W", "1", tn.addr)
		return err
	}); err != nil {
		return err
	}
	if err := r.startIperfServer(t, tn.addr); err != nil {
		return err
	}
	return r.measure(c, t, tn)
}

// startIperfServer runs `iperf3 -s -B addr` in the server namespace and
// waits until it listens.
func (r *runner) startIperfServer(t *topo, addr string) error {
	p, err := r.start(t.srv, "iperf3 server", syscall.SIGTERM, "", "iperf3", "-s", "-B", addr, "-p", iperfPort)
	if err != nil {
		return err
	}
	return harness.Eventually(r.ctx, 10*time.Second, "iperf3 server listening", func() error {
		if p.Exited() {
			return fmt.Errorf("iperf3 -s exited: %s", harness.Tail(p.Out.String(), 5))
		}
		out, err := r.cmd(t.srv, 5*time.Second, "ss", "-Hltn", "sport", "=", ":"+iperfPort)
		if err != nil || !strings.Contains(out, "LISTEN") {
			return fmt.Errorf("not listening yet")
		}
		return nil
	})
}

// --- kvpn ---

type vpndServer struct {
	proc *harness.Proc
	pin  string
}

// serverSpec is what a server in the benchmark is set up with: the
// one-tunnel cases use defaultSpec; the sessions part gives many users, a
// larger pool and no session limits.
type serverSpec struct {
	backend   string   // vpnd's tun-backend
	users     []string // all with password benchPass
	pool      string   // IPv4 pool; the server's tunnel address is its first
	unlimited bool     // no max-clients / max-same-clients (and no ocserv rate limit)
	ocpasswd  bool     // vpnd reads a password file written by ocserv's ocpasswd
}

func defaultSpec(backend string) serverSpec {
	return serverSpec{backend: backend, users: []string{benchUser}}
}

// startVpnd writes a password file and a config and starts vpnd in the
// server namespace with its certificate created in dir.
func (r *runner) startVpnd(t *topo, spec serverSpec) (*vpndServer, error) {
	dir := filepath.Join(t.dir, "vpnd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	passwd := filepath.Join(dir, "passwd")
	for _, u := range spec.users {
		var err error
		if spec.ocpasswd {
			_, err = r.cmdIn(nil, 10*time.Second, benchPass+"\n"+benchPass+"\n", "ocpasswd", "-c", passwd, u)
		} else {
			_, err = r.cmdIn(nil, 30*time.Second, benchPass+"\n", r.vpnd, "passwd", "--file", passwd, u)
		}
		if err != nil {
			return nil, err
		}
	}
	pool := cmp.Or(spec.pool, vpndPool)
	limits := ""
	if spec.unlimited {
		limits = "max-clients = 0\nmax-same-clients = 0\n"
	}
	cert, key := filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem")
	cfg := fmt.Sprintf(`# kvpnbench
listen = "0.0.0.0:443"
passwd-file = %q
server-cert = %q
server-key = %q
device = "kvpns0"
ipv4-network = %q
route = [%q]
tun-backend = %q
%s`, passwd, cert, key, pool, splitRoute, cmp.Or(spec.backend, "offload"), limits)
	cfgPath := filepath.Join(dir, "vpnd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := r.start(t.srv, "vpnd", syscall.SIGTERM, "", r.vpnd, "serve", "--config", cfgPath, "--state-dir", dir)
	if err != nil {
		return nil, err
	}
	if err := p.WaitLog(r.ctx, "vpnd listening", 15*time.Second); err != nil {
		return nil, err
	}
	pin, err := r.cmd(nil, 10*time.Second, r.vpnd, "pin", "--cert", cert)
	if err != nil {
		return nil, err
	}
	return &vpndServer{proc: p, pin: strings.TrimSpace(pin)}, nil
}

var (
	vpncUp      = regexp.MustCompile(`tunnel up: address ([0-9.]+)/\d+, MTU (\d+),.*transport ([^"\s]+)`)
	recordLayer = regexp.MustCompile(`msg="?record layer"?[^\n]*? engines="([^"]*)"`)
	vpndDTLSUp  = regexp.MustCompile(`msg="DTLS up"`)
)

// engineOf returns what a kvpn process logged about its TLS record layer
// (short form for the table, full line for the notes).
func engineOf(out string) (short, full string) {
	m := recordLayer.FindStringSubmatch(out)
	if m == nil {
		return "", ""
	}
	full = m[1]
	short, _, _ = strings.Cut(full, " (")
	return short, full
}

func (r *runner) setupKvpn(t *topo, backend string, dtls bool) (*tunnel, error) {
	srv, err := r.startVpnd(t, defaultSpec(backend))
	if err != nil {
		return nil, err
	}
	args := []string{r.vpnc, "connect", "-u", benchUser, "--passwd-on-stdin", "--servercert", srv.pin,
		"--state-dir", filepath.Join(t.dir, "vpnc-state"), "--tun-backend", backend}
	if !dtls {
		args = append(args, "--no-dtls")
	}
	args = append(args, "https://"+srvVeth+":443")
	cli, err := r.start(t.cli, "vpnc", syscall.SIGINT, benchPass+"\n", args...)
	if err != nil {
		return nil, err
	}
	m, err := cli.WaitFor(r.ctx, vpncUp, 20*time.Second)
	if err != nil {
		return nil, err
	}
	tn := &tunnel{addr: vpndTunnelIP, srvComm: "vpnd", cliComm: "vpnc", cliIf: "kvpnc0", negotiated: m[3]}
	want := "tls/"
	if dtls {
		want = "dtls/"
	}
	if !strings.HasPrefix(m[3], want) {
		return nil, fmt.Errorf("vpnc came up on transport %s, want %s...", m[3], want)
	}
	short, full := engineOf(cli.Out.String())
	_, srvFull := engineOf(srv.proc.Out.String())
	if short == "" {
		tn.engine = "not logged by this vpnc"
	} else {
		tn.engine = short
		if srvFull == full {
			tn.notes = append(tn.notes, "record layer of vpnc and vpnd: "+full)
			srvFull = ""
		} else {
			tn.notes = append(tn.notes, "vpnc record layer: "+full)
		}
	}
	if srvFull != "" {
		tn.notes = append(tn.notes, "vpnd record layer: "+srvFull)
	}
	return tn, nil
}

// --- openconnect ---

// --- ocserv ---

//go:build linux

package main

import (
	"cmp"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"kvpn/bench"
	"kvpn/internal/harness"
)

// The stock OpenConnect tools as benchmark cases: ocserv as a server,
// openconnect as a client of ocserv or of vpnd.

var (
	ocConfigured = regexp.MustCompile(`Configured as ([0-9.]+)`)
	ocDTLS       = regexp.MustCompile(`Established DTLS connection.*?(\(DTLS[^ \n]*\))`)
	ocTLS        = regexp.MustCompile(`(?i)ciphersuite (\(TLS[^ \n]*\))`)
)

// legacyArgs make openconnect ask for the AnyConnect legacy DTLS 1.2
// (X-DTLS-Master-Secret resumption) instead of PSK-NEGOTIATE.
var legacyArgs = []string{"--dtls-ciphers=" + bench.LegacyDTLSCiphers}

// startOpenconnect runs openconnect (with extra arguments) in the client
// namespace and waits until its tun device holds its address (and, for
// DTLS, until DTLS is established).
func (r *runner) startOpenconnect(t *topo, url, pin string, dtls bool, extra ...string) (*harness.Proc, string, string, error) {
	ifname := "octun" + harness.RandHex(3)
	oc := harness.Openconnect{User: benchUser, Password: benchPass, Pin: pin, Ifname: ifname, DTLS: dtls, Extra: extra}
	p, err := r.start(t.cli, "openconnect", syscall.SIGINT, oc.Stdin(), oc.Args(url)...)
	if err != nil {
		return nil, "", "", err
	}
	m, err := p.WaitFor(r.ctx, ocConfigured, 20*time.Second)
	if err != nil {
		return nil, "", "", err
	}
	addr := m[1]
	var tlsSuite string
	if tm := ocTLS.FindStringSubmatch(p.Out.String()); tm != nil {
		tlsSuite = gnutlsSuite(tm[1])
	}
	neg := tlsSuite
	if dtls {
		dm, err := p.WaitFor(r.ctx, ocDTLS, 15*time.Second)
		if err != nil {
			return nil, "", "", fmt.Errorf("DTLS not established: %v", err)
		}
		neg = gnutlsSuite(dm[1]) + " (over " + tlsSuite + ")"
	}
	// openconnect reports "Configured as" before vpnc-script has run.
	err = harness.Eventually(r.ctx, 10*time.Second, ifname+" configured", func() error {
		out, err := r.cmd(t.cli, 5*time.Second, "ip", "-4", "addr", "show", "dev", ifname)
		if err != nil || !strings.Contains(out, "inet "+addr) {
			return fmt.Errorf("%s does not hold %s yet", ifname, addr)
		}
		return nil
	})
	if err != nil {
		return nil, "", "", err
	}
	return p, ifname, neg, nil
}

// gnutlsSuite turns GnuTLS's "(TLS1.2)-(ECDHE-SECP256R1)-(AES-256-GCM)"
// into "TLS1.2 ECDHE-SECP256R1 AES-256-GCM".
func gnutlsSuite(s string) string {
	s = strings.ReplaceAll(s, ")-(", " ")
	return strings.Trim(s, "()")
}

func (r *runner) setupOpenconnectVpnd(t *topo, dtls bool, extra ...string) (*tunnel, error) {
	srv, err := r.startVpnd(t, defaultSpec("offload"))
	if err != nil {
		return nil, err
	}
	_, ifname, neg, err := r.startOpenconnect(t, "https://"+srvVeth+":443/", srv.pin, dtls, extra...)
	if err != nil {
		return nil, err
	}
	tn := &tunnel{addr: vpndTunnelIP, srvComm: "vpnd", cliComm: "openconnect", cliIf: ifname, negotiated: neg}
	if dtls {
		if _, err := srv.proc.WaitFor(r.ctx, vpndDTLSUp, 10*time.Second); err != nil {
			return nil, err
		}
	}
	if short, full := engineOf(srv.proc.Out.String()); short != "" {
		tn.engine = short + " (vpnd)"
		tn.notes = append(tn.notes, "vpnd record layer: "+full)
	}
	return tn, nil
}

type ocservServer struct {
	proc *harness.Proc
	pin  string
}

// startOcserv writes a password file (ocpasswd) and a config with Debian's
// defaults for the timers, and starts ocserv in the server namespace.
func (r *runner) startOcserv(t *topo, spec serverSpec) (*ocservServer, error) {
	maxClients, maxSame := 8, 4
	if spec.unlimited {
		maxClients, maxSame = 0, 0 // ocserv: 0 = unlimited
	}
	// Debian's defaults for the timers; the UDP port is always open, the
	// TLS case is openconnect --no-dtls.
	oc, err := harness.StartOcserv(r.ctx, r, t.srv, harness.OcservRun{
		Config: harness.OcservConfig{
			ListenHost: srvVeth, UDP: true, Dir: filepath.Join(t.dir, "ocserv"), Device: "ocs" + harness.RandHex(3),
			Network: cmp.Or(spec.pool, ocservPool), Route: splitRoute,
			MaxClients: maxClients, MaxSameClients: maxSame, Timers: harness.DebianTimers,
		},
		Users: spec.users, Password: benchPass,
		Proc: benchProc("ocserv", syscall.SIGTERM, ""),
	})
	if err != nil {
		return nil, err
	}
	r.track(oc.Proc)
	return &ocservServer{proc: oc.Proc, pin: oc.Pin}, nil
}

func (r *runner) setupOcserv(t *topo, dtls bool, extra ...string) (*tunnel, error) {
	srv, err := r.startOcserv(t, defaultSpec(""))
	if err != nil {
		return nil, err
	}
	pin := srv.pin
	_, ifname, neg, err := r.startOpenconnect(t, "https://"+srvVeth+":443/", pin, dtls, extra...)
	if err != nil {
		return nil, err
	}
	// ocserv's worker configures its end of the tun after the CONNECT.
	if err := harness.Eventually(r.ctx, 10*time.Second, "ocserv's tun address", func() error {
		out, err := r.cmd(t.srv, 5*time.Second, "ip", "-4", "addr")
		if err != nil || !strings.Contains(out, "inet "+ocservTunIP) {
			return fmt.Errorf("%s not configured yet", ocservTunIP)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return &tunnel{addr: ocservTunIP, srvComm: "ocserv", cliComm: "openconnect", cliIf: ifname, negotiated: neg}, nil
}

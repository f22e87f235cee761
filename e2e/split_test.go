package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Split and full tunnels, and pushed DNS (docs/routing-and-dns.md).

const (
	// publicServer is vpnd's only outer address, one router away from the
	// client, reached through the client's default route: a full tunnel
	// would capture it without the client's host route to the server.
	publicServer = "192.168.78.2"
	outerGW      = "192.168.77.1" // the router, the client's default gateway
	// extHost sits in a network behind the router whose namespace routes
	// back to the client's outer network only: a ping to it is answered
	// only when it leaves the client outside the tunnel.
	extNet    = "172.30.0.0/24"
	extRouter = "172.30.0.1"
	extHost   = "172.30.0.2"
	// insideHost answers inside the tunnel (on the server's loopback).
	insideHost = "10.99.0.1"
)

// newRoutedTopology: client, router, server and an ext host, each in a
// namespace; the client's default route goes via the router; vpnd listens
// on every address of the server namespace (0.0.0.0).
//
//	cli 192.168.77.2 ── 192.168.77.1 rtr 192.168.78.1 ── 192.168.78.2 srv (lo: 10.99.0.1)
//	                                    172.30.0.1 ── 172.30.0.2 ext
func newRoutedTopology(t *testing.T, extra string) *topology {
	t.Helper()
	tp := &topology{srvNS: newNS(t, "srv"), cliNS: newNS(t, "cli")}
	rtr, ext := newNS(t, "rtr"), newNS(t, "ext")
	link(t, rtr, outerGW+"/24", tp.cliNS, clientVeth+"/24")
	link(t, rtr, "192.168.78.1/24", tp.srvNS, publicServer+"/24")
	link(t, rtr, extRouter+"/24", ext, extHost+"/24")
	rtr.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	tp.srvNS.run(t, "ip", "addr", "add", insideHost+"/32", "dev", "lo")
	tp.srvNS.run(t, "ip", "route", "add", "default", "via", "192.168.78.1")
	tp.cliNS.run(t, "ip", "route", "add", "default", "via", outerGW)
	ext.run(t, "ip", "route", "add", "192.168.77.0/24", "via", extRouter)
	tp.srv = startServer(t, tp.srvNS, publicServer, extra)
	return tp
}

// routeGet is `ip route get dst` in ns.
func routeGet(t *testing.T, ns *netns, dst string) string {
	t.Helper()
	return strings.TrimSpace(ns.run(t, "ip", "route", "get", dst))
}

// wantTunnel checks that ns routes dst into kvpnc0 (inTunnel) or via the
// outer gateway.
func wantTunnel(t *testing.T, ns *netns, dst string, inTunnel bool) {
	t.Helper()
	got := routeGet(t, ns, dst)
	if inTunnel && !strings.Contains(got, "dev kvpnc0") {
		t.Errorf("%s should go into the tunnel: %s", dst, got)
	}
	if !inTunnel && (strings.Contains(got, "kvpnc0") || !strings.Contains(got, "via "+outerGW+" ")) {
		t.Errorf("%s should go via the outer gateway %s: %s", dst, outerGW, got)
	}
}

// stopClient ends vpnc with SIGINT and checks the clean exit.
func stopClient(t *testing.T, c *vpnClient) {
	t.Helper()
	c.proc.Cmd.Process.Signal(syscall.SIGINT)
	if code := c.proc.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("vpnc exit code %d after SIGINT, want 0", code)
	}
}

// TestSplitInclude: only the pushed network goes into the tunnel; the rest
// keeps the outer default route; everything is undone on exit.
func TestSplitInclude(t *testing.T) {
	requireE2E(t)
	tp := newRoutedTopology(t, `route = ["10.99.0.0/16"]`)
	before := routes(t, tp.cliNS)
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	wantTunnel(t, tp.cliNS, "10.99.3.4", true)
	wantTunnel(t, tp.cliNS, extHost, false)
	wantTunnel(t, tp.cliNS, "198.51.100.1", false)
	ping(t, tp.cliNS, insideHost)   // through the tunnel
	ping(t, tp.cliNS, tunnelServer) // the pool's own route
	ping(t, tp.cliNS, extHost)      // outside it
	stopClient(t, c)
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestSplitExcludeInFullTunnel: route = ["default"] with a no-route: the
// excluded network keeps its outer path (ip route get, and a ping its
// host answers only on the outer path), everything else enters the tunnel,
// traffic flows, and the routes outside the tunnel are undone on exit.
func TestSplitExcludeInFullTunnel(t *testing.T) {
	requireE2E(t)
	tp := newRoutedTopology(t, `route = ["default"]`+"\n"+`no-route = ["`+extNet+`"]`)
	before := routes(t, tp.cliNS)
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	if !strings.Contains(c.proc.Out.String(), "routes 0.0.0.0/0 (full tunnel) except "+extNet) {
		t.Errorf("vpnc's up line does not report the exclusion:\n%s", c.proc.Out.String())
	}
	wantTunnel(t, tp.cliNS, extHost, false)
	wantTunnel(t, tp.cliNS, "172.30.1.1", true) // next to, not in, the excluded network
	wantTunnel(t, tp.cliNS, "198.51.100.1", true)
	wantTunnel(t, tp.cliNS, publicServer, false) // the pinned server
	// The routes vpnc added outside the tunnel carry its protocol number.
	outer := tp.cliNS.run(t, "ip", "-4", "route", "show", "proto", "107")
	for _, want := range []string{publicServer + " via " + outerGW, extNet + " via " + outerGW} {
		if !strings.Contains(outer, want) {
			t.Errorf("no %q among vpnc's outer routes:\n%s", want, outer)
		}
	}
	ping(t, tp.cliNS, extHost) // answered only on the outer path
	ping(t, tp.cliNS, insideHost)
	bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, bulkSize(4<<20))
	stopClient(t, c)
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestServerStaysReachable: a full tunnel, and a split route that contains
// the server's own address, must not swallow the connection to the
// server: vpnc pins a host route to it, traffic flows over DTLS and TLS,
// and the pin is removed on exit.
func TestServerStaysReachable(t *testing.T) {
	requireE2E(t)
	for _, tc := range []struct{ name, cfg string }{
		{"full-tunnel", `route = ["default"]`},
		{"route-contains-server", `route = ["192.168.78.0/24", "10.99.0.0/16"]`},
	} {
		for _, transport := range []string{"dtls", "tls"} {
			t.Run(tc.name+"-"+transport, func(t *testing.T) {
				tp := newRoutedTopology(t, tc.cfg)
				before := routes(t, tp.cliNS)
				var flags []string
				if transport == "tls" {
					flags = append(flags, "--no-dtls")
				}
				c := startClient(t, tp.cliNS, tp.srv, testPassword, true, flags...)
				if !strings.Contains(c.proc.Out.String(), "transport "+transport+"/") {
					t.Fatalf("transport is not %s:\n%s", transport, c.proc.Out.String())
				}
				wantTunnel(t, tp.cliNS, publicServer, false)
				wantTunnel(t, tp.cliNS, "192.168.78.9", true) // the server's network, but not the server
				ping(t, tp.cliNS, insideHost)
				bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, bulkSize(8<<20))
				stopClient(t, c)
				if after := routes(t, tp.cliNS); after != before {
					t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
	}
}

const pushedDNS = `dns = ["192.0.2.53", "192.0.2.54"]
default-domain = "corp.example"`

// checkPushedResolv checks the namespace's resolv.conf while the tunnel is
// up: the pushed servers replace the old one, the domain is searched, and
// kvpn wrote it once.
func checkPushedResolv(t *testing.T, ns *netns) {
	t.Helper()
	got, err := os.ReadFile(ns.ResolvConf())
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	if !strings.Contains(s, "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\n") ||
		strings.Contains(s, "nameserver 192.0.2.1\n") || strings.Count(s, "Generated by kvpn") != 1 {
		t.Fatalf("pushed DNS not applied as expected:\n%s", s)
	}
}

func checkOrigResolv(t *testing.T, ns *netns, when string) {
	t.Helper()
	if got, err := os.ReadFile(ns.ResolvConf()); err != nil || string(got) != origResolv {
		t.Fatalf("resolv.conf %s: %q (%v), want the original %q", when, got, err, origResolv)
	}
}

// TestPushedDNS: the pushed DNS servers and search domain are in the
// namespace's resolv.conf while the tunnel is up, and the file is
// byte-for-byte the original after a clean exit; after kill -9 (which
// leaves resolv.conf, the server pin, the exclude route and the IPv6
// black hole of this IPv4-only full tunnel behind) the
// next start undoes the dead run's changes before anything else, even
// when its own login then fails; and a later run applies DNS once and
// restores it again.
func TestPushedDNS(t *testing.T) {
	requireE2E(t)
	tp := newRoutedTopology(t, pushedDNS+"\n"+`route = ["default"]`+"\n"+`no-route = ["`+extNet+`"]`)
	state := t.TempDir()
	before := routes(t, tp.cliNS)

	// Clean run.
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true, "--state-dir", state)
	c.proc.waitLog(t, `msg="DNS applied" backend=resolvconf`, 5*time.Second)
	checkPushedResolv(t, tp.cliNS)
	stopClient(t, c)
	checkOrigResolv(t, tp.cliNS, "after a clean exit")
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// vpnc keeps its records in a directory per interface, whose lock
	// file stays.
	if left, _ := os.ReadDir(filepath.Join(state, "kvpnc0")); len(left) != 1 || left[0].Name() != "lock" {
		t.Fatalf("undo records left in the state directory after a clean exit: %v", left)
	}

	// Crash: kill -9 while up.
	c = startClient(t, tp.cliNS, tp.srv, testPassword, true, "--state-dir", state)
	checkPushedResolv(t, tp.cliNS)
	c.proc.Cmd.Process.Kill()
	<-c.proc.Done()
	checkPushedResolv(t, tp.cliNS) // nobody cleaned up
	if outer := tp.cliNS.run(t, "ip", "-4", "route", "show", "proto", "107"); !strings.Contains(outer, publicServer) ||
		!strings.Contains(outer, extNet) {
		t.Fatalf("expected the killed run's pin and exclude route to remain:\n%s", outer)
	}
	for _, f := range []string{"resolv.conf.kvpn-backup", "routes.kvpn-undo"} {
		if _, err := os.Stat(filepath.Join(state, "kvpnc0", f)); err != nil {
			t.Fatalf("the killed run left no %s: %v", f, err)
		}
	}

	// The next start repairs first, even though its own login fails.
	bad := startClient(t, tp.cliNS, tp.srv, "wrong password", false, "--state-dir", state)
	if code := bad.proc.exitCode(t, 20*time.Second); code != 3 {
		t.Fatalf("vpnc with a wrong password exited %d, want 3", code)
	}
	for _, want := range []string{"restored DNS settings left behind by an earlier run", `removed routes left behind by an earlier run" routes=4`} {
		if !strings.Contains(bad.proc.Out.String(), want) {
			t.Errorf("vpnc did not log %q:\n%s", want, bad.proc.Out.String())
		}
	}
	checkOrigResolv(t, tp.cliNS, "after the start following kill -9")
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored after kill -9 and a new start:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Kill again, then a successful start recovers and applies DNS once.
	c = startClient(t, tp.cliNS, tp.srv, testPassword, true, "--state-dir", state)
	c.proc.Cmd.Process.Kill()
	<-c.proc.Done()
	c = startClient(t, tp.cliNS, tp.srv, testPassword, true, "--state-dir", state)
	c.proc.waitLog(t, "restored DNS settings left behind by an earlier run", 5*time.Second)
	checkPushedResolv(t, tp.cliNS)
	ping(t, tp.cliNS, extHost)
	ping(t, tp.cliNS, insideHost)
	stopClient(t, c)
	checkOrigResolv(t, tp.cliNS, "after kill -9, restart and a clean exit")
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestResolvedBackend: when the namespace's resolv.conf points at
// systemd-resolved's stub, vpnc (--dns-backend auto) configures the tunnel
// link with resolvectl instead of editing the file. The resolvectl here is
// a fake script first on PATH that records its arguments: the test checks
// the exact calls vpnc makes (and that resolv.conf is untouched), not
// systemd-resolved itself, which does not run in CI's namespaces.
func TestResolvedBackend(t *testing.T) {
	requireE2E(t)
	for _, tc := range []struct {
		name, cfg, backend, want string
	}{
		{"auto-full-tunnel", `route = ["default"]`, "auto",
			"-- dns kvpnc0 192.0.2.53 192.0.2.54\n-- domain kvpnc0 corp.example ~.\n-- default-route kvpnc0 true\n-- revert kvpnc0\n"},
		{"auto-split", `route = ["10.99.0.0/16"]`, "auto",
			"-- dns kvpnc0 192.0.2.53 192.0.2.54\n-- domain kvpnc0 corp.example\n-- default-route kvpnc0 false\n-- revert kvpnc0\n"},
		{"none", `route = ["default"]`, "none", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newRoutedTopology(t, pushedDNS+"\n"+tc.cfg)
			const stub = "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
			if err := os.WriteFile(tp.cliNS.ResolvConf(), []byte(stub), 0o644); err != nil {
				t.Fatal(err)
			}
			bin := t.TempDir()
			log := filepath.Join(bin, "calls")
			script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\n", log)
			if err := os.WriteFile(filepath.Join(bin, "resolvectl"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			env := []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
			c := startClientEnv(t, tp.cliNS, tp.srv, testPassword, true, env, "--dns-backend", tc.backend)
			if tc.backend != "none" {
				c.proc.waitLog(t, `msg="DNS applied" backend=resolved`, 5*time.Second)
			} else {
				c.proc.waitLog(t, "pushed DNS not applied (--dns-backend none)", 5*time.Second)
			}
			stopClient(t, c)
			got, _ := os.ReadFile(log)
			if string(got) != tc.want {
				t.Errorf("resolvectl calls:\n%s\nwant:\n%s", got, tc.want)
			}
			if got, _ := os.ReadFile(tp.cliNS.ResolvConf()); string(got) != stub {
				t.Errorf("resolv.conf changed with the resolved backend:\n%s", got)
			}
		})
	}
}

// TestOpenconnectSplitExclude: the stock openconnect client receives
// vpnd's split-include, split-exclude and DNS settings. openconnect hands
// them to its script as environment variables (CISCO_SPLIT_INC_*,
// CISCO_SPLIT_EXC_*, INTERNAL_IP4_DNS, CISCO_DEF_DOMAIN); the script here
// records them instead of configuring the host.
func TestOpenconnectSplitExclude(t *testing.T) {
	requireOpenconnect(t)
	tp := newTopology(t, pushedDNS+"\n"+`route = ["10.99.0.0/16", "172.30.0.0/16"]`+"\n"+`no-route = ["172.30.5.0/24"]`)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	script := filepath.Join(dir, "record-env")
	body := fmt.Sprintf("#!/bin/sh\nif [ \"$reason\" = connect ]; then env | grep -E '^(CISCO_SPLIT_|INTERNAL_IP4_DNS=|CISCO_DEF_DOMAIN=)' | sort > %s.tmp && mv %s.tmp %s; fi\nexit 0\n",
		envFile, envFile, envFile)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	oc := startOpenconnect(t, tp.cliNS, "https://"+tp.srv.ip+":443/", tp.srv.pin, false, "--script", script)
	var env string
	eventually(t, 10*time.Second, "openconnect's script run", func() error {
		b, err := os.ReadFile(envFile)
		env = string(b)
		return err
	})
	// openconnect lists the routes in reverse order of the headers.
	for _, want := range []string{
		`CISCO_SPLIT_EXC=1\n`,
		`CISCO_SPLIT_EXC_0_ADDR=172\.30\.5\.0\n`,
		`CISCO_SPLIT_EXC_0_MASK=255\.255\.255\.0\n`,
		`CISCO_SPLIT_EXC_0_MASKLEN=24\n`,
		`CISCO_SPLIT_INC=2\n`,
		`CISCO_SPLIT_INC_(\d)_ADDR=10\.99\.0\.0\nCISCO_SPLIT_INC_(\d)_MASK=255\.255\.0\.0\nCISCO_SPLIT_INC_(\d)_MASKLEN=16\n`,
		`CISCO_SPLIT_INC_(\d)_ADDR=172\.30\.0\.0\nCISCO_SPLIT_INC_(\d)_MASK=255\.255\.0\.0\nCISCO_SPLIT_INC_(\d)_MASKLEN=16\n`,
		`INTERNAL_IP4_DNS=192\.0\.2\.53 192\.0\.2\.54\n`,
		`CISCO_DEF_DOMAIN=corp\.example\n`,
	} {
		if !regexp.MustCompile(want).MatchString(env) {
			t.Errorf("openconnect's script did not get %s; it got:\n%s", want, env)
		}
	}
	oc.proc.Cmd.Process.Signal(syscall.SIGINT)
	oc.proc.exitCode(t, 10*time.Second)
}

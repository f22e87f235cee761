package e2e

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// reLine is vpnc's log line after a successful reconnect.
var reLine = regexp.MustCompile(`msg="tunnel re-established" address=([0-9.]+)`)

// reestablished waits for the n-th "tunnel re-established" of c and
// returns the address it reports.
func reestablished(t *testing.T, c *vpnClient, n int, timeout time.Duration) string {
	t.Helper()
	var addr string
	eventually(t, timeout, "vpnc re-establishing the tunnel", func() error {
		m := reLine.FindAllStringSubmatch(c.proc.Out.String(), -1)
		if len(m) < n {
			select {
			case <-c.proc.Done():
				t.Fatalf("vpnc exited (%v) instead of reconnecting:\n%s", c.proc.Err(), c.proc.Out.String())
			default:
			}
			return errNotYet
		}
		addr = m[n-1][1]
		return nil
	})
	return addr
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}

// stillRunning fails the test if vpnc has exited.
func stillRunning(t *testing.T, c *vpnClient) {
	t.Helper()
	select {
	case <-c.proc.Done():
		t.Fatalf("vpnc exited (%v):\n%s", c.proc.Err(), c.proc.Out.String())
	default:
	}
}

// TestReconnectAfterNetworkCut drops every packet between client and
// server for longer than DPD, then lets them through again: vpnc notices
// the dead peer, retries with backoff while the network is down, and
// comes back with its cookie to the same address, without exiting and
// without a second login.
func TestReconnectAfterNetworkCut(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)

	tp.cliNS.run(t, "nft", "add table inet kvpn_cut")
	tp.cliNS.run(t, "nft", "add chain inet kvpn_cut in { type filter hook input priority 0 ; }")
	tp.cliNS.run(t, "nft", "add chain inet kvpn_cut out { type filter hook output priority 0 ; }")
	tp.cliNS.run(t, "nft", "add rule inet kvpn_cut in ip saddr "+serverVeth+" drop")
	tp.cliNS.run(t, "nft", "add rule inet kvpn_cut out ip daddr "+serverVeth+" drop")
	c.proc.waitLog(t, "connection to server lost", 15*time.Second)
	// Both ends have given up on the old connection (DPD is 2 s) and at
	// least one reconnect attempt has failed before the network returns.
	tp.srv.proc.waitLog(t, "connection lost; keeping session for reconnect", 15*time.Second)
	c.proc.waitLog(t, "reconnect failed; retrying", 30*time.Second)
	stillRunning(t, c)
	tp.cliNS.run(t, "nft", "delete table inet kvpn_cut")

	if addr := reestablished(t, c, 1, 30*time.Second); addr != c.addr {
		t.Fatalf("reconnected with address %s, want %s", addr, c.addr)
	}
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)
	ping(t, tp.srvNS, c.addr)
	stillRunning(t, c)
	if n := strings.Count(tp.srv.proc.Out.String(), "login succeeded"); n != 1 {
		t.Fatalf("%d logins, want 1 (the reconnect uses the cookie)", n)
	}
}

// TestReconnectAfterServerRestart stops vpnd with SIGTERM and starts it
// again with the same configuration and state directory: the restarted
// vpnd knows nothing of the session, but resumes it from the signed cookie
// (its key is in the state directory), with the same address.
func TestReconnectAfterServerRestart(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)

	tp.srv.restart(t)
	if addr := reestablished(t, c, 1, 30*time.Second); addr != c.addr {
		t.Fatalf("reconnected with address %s, want %s", addr, c.addr)
	}
	tp.srv.proc.waitLog(t, "session resumed from cookie", 5*time.Second)
	if strings.Contains(tp.srv.proc.Out.String(), "login succeeded") {
		t.Fatalf("the restarted vpnd saw a login; the client must resume with its cookie:\n%s", tp.srv.proc.Out.String())
	}
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)
	ping(t, tp.srvNS, c.addr)
	stillRunning(t, c)
}

// TestResumeOnAnotherNode runs two vpnd nodes, each with its own address
// pool and sharing the state directory (certificate, password file and
// cookie key), behind a load balancer: a namespace that DNATs the
// service address to one node. The client connects through it to node 1;
// then the balancer is switched to node 2 and node 1 is stopped. The
// client reconnects with its cookie, node 2 resumes the session without a
// password and gives it an address from its own pool, and vpnc moves its
// interface to that address.
//
//	cli 192.168.80.2 -- .80.1 lb .81.1 -- .81.2 node1 (10.77.0.0/24)
//	                             .82.1 -- .82.2 node2 (10.78.0.0/24)
//	service address 192.168.90.10:443 (TCP and UDP)
func TestResumeOnAnotherNode(t *testing.T) {
	requireE2E(t)
	cli, lb, n1, n2 := newNS(t, "cli"), newNS(t, "lb"), newNS(t, "n1"), newNS(t, "n2")
	link(t, cli, "192.168.80.2/24", lb, "192.168.80.1/24")
	link(t, lb, "192.168.81.1/24", n1, "192.168.81.2/24")
	link(t, lb, "192.168.82.1/24", n2, "192.168.82.2/24")
	cli.run(t, "ip", "route", "add", "default", "via", "192.168.80.1")
	n1.run(t, "ip", "route", "add", "default", "via", "192.168.81.1")
	n2.run(t, "ip", "route", "add", "default", "via", "192.168.82.1")
	lb.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	const vip = "192.168.90.10"
	balanceTo := func(node string) {
		lb.run(t, "nft", "flush ruleset")
		lb.run(t, "nft", "add table ip kvpn_lb")
		lb.run(t, "nft", "add chain ip kvpn_lb pre { type nat hook prerouting priority -100 ; }")
		lb.run(t, "nft", "add rule ip kvpn_lb pre ip daddr "+vip+" tcp dport 443 dnat to "+node)
		lb.run(t, "nft", "add rule ip kvpn_lb pre ip daddr "+vip+" udp dport 443 dnat to "+node)
		lb.run(t, "env", helperEnv+"=ctflush", bins.self)
	}
	balanceTo("192.168.81.2")

	dir := t.TempDir()
	node1 := startServerIn(t, n1, vip, dir, "node1.toml", "ipv4-network = \"10.77.0.0/24\"\nnode-name = \"node1\"")
	node2 := startServerIn(t, n2, vip, dir, "node2.toml", "ipv4-network = \"10.78.0.0/24\"\nnode-name = \"node2\"\nlog-level = \"debug\"")
	if node1.pin != node2.pin {
		t.Fatalf("nodes serve different certificates: %s, %s", node1.pin, node2.pin)
	}
	c := startClient(t, cli, node1, testPassword, true)
	pool1, pool2 := netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("10.78.0.0/24")
	if !pool1.Contains(netip.MustParseAddr(c.addr)) {
		t.Fatalf("address %s is not from node 1's pool", c.addr)
	}
	ping(t, cli, "10.77.0.1", "-I", c.addr)

	balanceTo("192.168.82.2")
	node1.proc.stop(10 * time.Second)
	addr := reestablished(t, c, 1, 30*time.Second)
	if !pool2.Contains(netip.MustParseAddr(addr)) {
		t.Fatalf("address %s after moving to node 2 is not from its pool", addr)
	}
	node2.proc.waitLog(t, "session resumed from cookie", 5*time.Second)
	if !strings.Contains(node2.proc.Out.String(), "issued-by=node1") {
		t.Fatalf("node 2 does not report the cookie as node 1's:\n%s", node2.proc.Out.String())
	}
	if strings.Contains(node2.proc.Out.String(), "login succeeded") {
		t.Fatalf("node 2 saw a login; the client must resume with its cookie:\n%s", node2.proc.Out.String())
	}
	c.proc.waitLog(t, "interface moved to it", 5*time.Second)
	ping(t, cli, "10.78.0.1", "-I", addr)
	ping(t, n2, addr)
	if out := cli.run(t, "ip", "-4", "-o", "addr", "show", "dev", "kvpnc0"); strings.Contains(out, c.addr+"/") {
		t.Fatalf("old address %s still on the interface:\n%s", c.addr, out)
	}
	// vpnc renews its cookie through the balancer while the tunnel runs
	// (every cookie-timeout/2 = 15 s here).
	node2.proc.waitLog(t, "cookie refreshed", 25*time.Second)
	if strings.Contains(c.proc.Out.String(), "could not renew") {
		t.Fatalf("cookie renewal failed:\n%s", c.proc.Out.String())
	}
	stillRunning(t, c)
}

// TestBadCookieRefused presents spoiled cookies on CONNECT: one character
// changed (the MAC fails), cut short, and not a cookie at all. vpnd answers
// 401 and logs why; a connected client is not disturbed.
func TestBadCookieRefused(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	addr := net.JoinHostPort(serverVeth, "443")
	for _, tc := range []struct{ mode, log string }{
		{"tampered", "cookie failed authentication"},
		{"truncated", "cookie failed authentication"},
		{"garbage", "cookie is malformed"},
	} {
		out, err := tp.cliNS.try("env", helperEnv+"=bad", bins.self, addr, tc.mode, testUser, testPassword)
		if err != nil || !strings.Contains(out, "status 401") {
			t.Fatalf("%s cookie: want status 401, got (%v):\n%s", tc.mode, err, out)
		}
		eventually(t, 5*time.Second, "vpnd logging the refusal", func() error {
			for _, line := range strings.Split(tp.srv.proc.Out.String(), "\n") {
				if strings.Contains(line, "CONNECT refused: bad cookie") && strings.Contains(line, tc.log) {
					return nil
				}
			}
			return errNotYet
		})
	}
	if n := strings.Count(tp.srv.proc.Out.String(), "session resumed"); n != 0 {
		t.Fatalf("a spoiled cookie resumed a session:\n%s", tp.srv.proc.Out.String())
	}
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)
}

// TestOpenconnectResumesAfterServerCrash: stock openconnect, which never
// renews its cookie, survives a vpnd that dies (SIGKILL) and is started
// again with the same state directory: openconnect reconnects with the
// cookie from its login, and the new vpnd resumes the session from it with
// the same address and no second login.
func TestOpenconnectResumesAfterServerCrash(t *testing.T) {
	requireE2E(t)
	requireOpenconnect(t)
	const route = "10.99.0.0/16"
	tp := newTopology(t, `route = ["`+route+`"]`)
	oc := startOpenconnect(t, tp.cliNS, "https://"+tp.srv.ip+":443/", tp.srv.pin, false)
	addr := waitTunnelUp(t, tp.srv, 1)
	waitTunnelConfig(t, tp.cliNS, oc.ifname, addr, route)
	ping(t, tp.cliNS, tunnelServer)

	tp.srv.proc.Cmd.Process.Kill()
	<-tp.srv.proc.Done()
	tp.srv.restart(t)
	oc.proc.waitCount(t, "CSTP connected", 2, 40*time.Second)
	if got := waitTunnelUp(t, tp.srv, 1); got != addr {
		t.Fatalf("resumed with address %s, want %s", got, addr)
	}
	tp.srv.proc.waitLog(t, "session resumed from cookie", 5*time.Second)
	waitTunnelConfig(t, tp.cliNS, oc.ifname, addr, route)
	ping(t, tp.cliNS, tunnelServer)
	ping(t, tp.srvNS, addr)
	if n := len(ocAuthPost.FindAllString(oc.proc.Out.String(), -1)); n != 1 {
		t.Fatalf("openconnect posted its credentials %d times, want once:\n%s", n, oc.proc.Out.String())
	}
	if strings.Contains(tp.srv.proc.Out.String(), "login succeeded") {
		t.Fatalf("the restarted vpnd saw a login:\n%s", tp.srv.proc.Out.String())
	}
	interruptOpenconnect(t, oc)
	tp.srv.proc.waitLog(t, "client disconnected", 5*time.Second)
}

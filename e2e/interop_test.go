package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/harness"
)

// Interoperability with the stock tools: Debian's openconnect against vpnd,
// and our vpnc against Debian's ocserv. The transport is a parameter (dtls)
// of every fixture here so that DTLS variants are the same tests with
// dtls=true.

// ocClient is a running stock openconnect.
type ocClient struct {
	ns     *netns
	ifname string
	proc   *proc
}

// startOpenconnect runs openconnect in ns against url with the default
// vpnc-script and a tun device of a name unique on this machine, and waits
// until it reports the tunnel configured. With dtls false it passes
// --no-dtls. extra flags (e.g. --script) go before the URL.
func startOpenconnect(t *testing.T, ns *netns, url, pin string, dtls bool, extra ...string) *ocClient {
	t.Helper()
	c := &ocClient{ns: ns, ifname: "octun" + randHex(3)}
	oc := harness.Openconnect{User: testUser, Password: testPassword, Pin: pin, Ifname: c.ifname, DTLS: dtls, Extra: extra}
	c.proc = ns.start(t, "openconnect "+c.ifname, oc.Stdin(), oc.Args(url)...)
	c.proc.waitLog(t, "Configured as ", 20*time.Second)
	return c
}

// waitCount waits until the process's output contains s at least n times.
func (p *proc) waitCount(t *testing.T, s string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s logging %q %d times", p.Name, s, n), func() error {
		if got := strings.Count(p.Out.String(), s); got < n {
			return fmt.Errorf("seen %d times:\n%s", got, p.Out.String())
		}
		return nil
	})
}

// ocAuthPost matches openconnect's report of posting its credentials.
var ocAuthPost = regexp.MustCompile(`(?m)^POST https://\S+/auth$`)

var vpndTunnelUp = regexp.MustCompile(`msg="tunnel up".* address=([0-9.]+)`)

// vpndAddresses returns the address of every "tunnel up" line vpnd logged,
// in order.
func vpndAddresses(s *vpnServer) []string {
	var addrs []string
	for _, m := range vpndTunnelUp.FindAllStringSubmatch(s.proc.Out.String(), -1) {
		addrs = append(addrs, m[1])
	}
	return addrs
}

// waitTunnelUp waits for vpnd's n-th "tunnel up" line and returns its
// address.
func waitTunnelUp(t *testing.T, s *vpnServer, n int) string {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("vpnd's tunnel up #%d", n), func() error {
		if got := len(vpndAddresses(s)); got < n {
			return fmt.Errorf("%d tunnel up lines:\n%s", got, s.proc.Out.String())
		}
		return nil
	})
	return vpndAddresses(s)[n-1]
}

// waitTunnelConfig waits until ifname in ns holds addr and route goes into
// it. (openconnect reports "Configured as" before its vpnc-script has
// run, so the configuration appears a little later.)
func waitTunnelConfig(t *testing.T, ns *netns, ifname, addr, route string) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%s configured with %s and route %s", ifname, addr, route), func() error {
		out, err := ns.try("ip", "-4", "addr", "show", "dev", ifname)
		if err != nil || !strings.Contains(out, "inet "+addr+"/") && !strings.Contains(out, "inet "+addr+" ") {
			return fmt.Errorf("%s does not hold %s (%v):\n%s", ifname, addr, err, out)
		}
		if out, err := ns.try("ip", "-4", "route", "show", "exact", route); err != nil || !strings.Contains(out, "dev "+ifname) {
			all, _ := ns.try("ip", "-4", "route")
			return fmt.Errorf("route %s does not go into %s (%v):\n%s\nall routes:\n%s", route, ifname, err, out, all)
		}
		return nil
	})
}

// interruptOpenconnect sends SIGINT (openconnect then sends DISCONNECT
// and runs the script's disconnect), and checks the exit code and that the
// tun device is gone.
func interruptOpenconnect(t *testing.T, c *ocClient) {
	t.Helper()
	c.proc.Cmd.Process.Signal(syscall.SIGINT)
	if code := c.proc.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("openconnect exit code %d after SIGINT, want 0\n%s", code, c.proc.Out.String())
	}
	if !strings.Contains(c.proc.Out.String(), "Send BYE packet") {
		t.Fatalf("openconnect sent no DISCONNECT:\n%s", c.proc.Out.String())
	}
	if out, _ := c.ns.try("ip", "link", "show", c.ifname); !strings.Contains(out, "does not exist") {
		t.Fatalf("interface %s left behind: %s", c.ifname, out)
	}
}

// TestOpenconnectToVpnd: the stock openconnect client logs in to vpnd,
// configures its interface and split route from vpnd's answer, carries
// pings and a hashed bulk transfer both ways, logs out cleanly (the
// session ends and its address is freed), and reconnects with its cookie
// after the server side of the TCP connection is cut.
func TestOpenconnectToVpnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		dtls bool
	}{{"tls", false}, {"dtls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			requireOpenconnect(t)
			testOpenconnectToVpnd(t, tc.dtls)
		})
	}
}

// checkUDPCarried checks, with the nft counter countUDP installed, that
// the transfer of size bytes each way went over UDP (DTLS) or not at all.
func checkUDPCarried(t *testing.T, ns *netns, before int64, size int64, dtls bool) {
	t.Helper()
	got := udpBytes(t, ns) - before
	if dtls && got < size {
		t.Fatalf("only %d bytes arrived over UDP for a %d-byte upload: DTLS did not carry the data", got, size)
	}
	if !dtls && got > 0 {
		t.Fatalf("%d bytes went over UDP on a TLS-only tunnel", got)
	}
}

func testOpenconnectToVpnd(t *testing.T, dtls bool) {
	// A /30 pool has room for exactly one client (10.77.0.2): a second
	// login gets an address only if the first session freed it.
	const (
		route      = "10.99.0.0/16"
		clientAddr = "10.77.0.2"
	)
	tp := newTopology(t, `ipv4-network = "10.77.0.0/30"`+"\n"+`route = ["`+route+`"]`)
	url := "https://" + tp.srv.ip + ":443/"
	before := routes(t, tp.cliNS)

	// Login, interface and route, pings, bulk transfer.
	oc := startOpenconnect(t, tp.cliNS, url, tp.srv.pin, dtls)
	addr := waitTunnelUp(t, tp.srv, 1)
	if addr != clientAddr {
		t.Fatalf("vpnd assigned %s, want %s", addr, clientAddr)
	}
	if !strings.Contains(oc.proc.Out.String(), "Configured as "+addr) {
		t.Fatalf("openconnect does not report address %s:\n%s", addr, oc.proc.Out.String())
	}
	waitTunnelConfig(t, tp.cliNS, oc.ifname, addr, route)
	if dtls {
		oc.proc.waitLog(t, "(DTLS1.2)-(PSK)", 10*time.Second)
		tp.srv.proc.waitLog(t, `msg="DTLS up"`, 5*time.Second)
	}
	countUDP(t, tp.srvNS)
	ping(t, tp.cliNS, tunnelServer)
	ping(t, tp.srvNS, addr)
	size := bulkSize(32 << 20)
	udpBefore := udpBytes(t, tp.srvNS)
	d := bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, size)
	checkUDPCarried(t, tp.srvNS, udpBefore, size, dtls)
	t.Logf("openconnect -> vpnd: %d MiB each way in %s (%.2f Gbit/s per direction)", size>>20, d.Round(time.Millisecond),
		float64(size*8)/d.Seconds()/1e9)

	// Clean logout: DISCONNECT ends the session and frees the address.
	interruptOpenconnect(t, oc)
	tp.srv.proc.waitLog(t, "client disconnected", 5*time.Second)
	tp.srv.proc.waitLog(t, `msg="session ended"`, 5*time.Second)
	if !regexp.MustCompile(`msg="session ended".* address=` + regexp.QuoteMeta(addr)).MatchString(tp.srv.proc.Out.String()) {
		t.Fatalf("session end does not name address %s:\n%s", addr, tp.srv.proc.Out.String())
	}
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A fresh login gets the (only) address again.
	oc = startOpenconnect(t, tp.cliNS, url, tp.srv.pin, dtls)
	if addr2 := waitTunnelUp(t, tp.srv, 2); addr2 != clientAddr {
		t.Fatalf("second login got %s, want the freed %s", addr2, clientAddr)
	}
	waitTunnelConfig(t, tp.cliNS, oc.ifname, clientAddr, route)
	ping(t, tp.cliNS, tunnelServer)

	// Cut the TCP connection on the server side: openconnect reconnects
	// with its cookie and keeps its address.
	tp.srvNS.run(t, "ss", "-K", "state", "established", "sport", "=", ":443")
	tp.srv.proc.waitLog(t, "connection lost; keeping session for reconnect", 5*time.Second)
	oc.proc.waitCount(t, "CSTP connected", 2, 15*time.Second)
	if addr3 := waitTunnelUp(t, tp.srv, 3); addr3 != clientAddr {
		t.Fatalf("reconnect got %s, want %s", addr3, clientAddr)
	}
	waitTunnelConfig(t, tp.cliNS, oc.ifname, clientAddr, route)
	ping(t, tp.cliNS, tunnelServer)
	ping(t, tp.srvNS, clientAddr)
	// A reconnect reuses the cookie: no second login, on either side.
	if n := len(ocAuthPost.FindAllString(oc.proc.Out.String(), -1)); n != 1 {
		t.Fatalf("openconnect posted its credentials %d times, want once (reconnect with the cookie):\n%s",
			n, oc.proc.Out.String())
	}
	if n := strings.Count(tp.srv.proc.Out.String(), `msg="login succeeded"`); n != 2 {
		t.Fatalf("vpnd saw %d logins, want 2 (the reconnect must use the cookie):\n%s", n, tp.srv.proc.Out.String())
	}

	interruptOpenconnect(t, oc)
	tp.srv.proc.waitCount(t, `msg="session ended"`, 2, 5*time.Second)
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored after the reconnected session:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestVpncToOcserv: our vpnc logs in to the stock ocserv (TLS 1.2 with
// Debian's priority string, and TLS 1.3), configures the address and split
// route ocserv pushes, pings ocserv's end of the tunnel, moves a hashed bulk
// transfer both ways, and exits cleanly on SIGINT with everything restored
// while ocserv logs the disconnect.
func TestVpncToOcserv(t *testing.T) {
	for _, tc := range []struct {
		name, prio, version string
		dtls                bool
	}{
		{"tls12", debianTLSPriorities, "TLS1.2", false},
		{"tls13", tls13Priorities, "TLS1.3", false},
		{"tls12-dtls", debianTLSPriorities, "TLS1.2", true},
		{"tls13-dtls", tls13Priorities, "TLS1.3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireOcserv(t)
			testVpncToOcserv(t, ocservOpts{tlsPriorities: tc.prio, dtls: tc.dtls}, tc.version)
		})
	}
}

func testVpncToOcserv(t *testing.T, o ocservOpts, wantVersion string) {
	const srvIP, cliIP = "192.168.88.1", "192.168.88.2"
	srvNS, cliNS := newNS(t, "osrv"), newNS(t, "cli")
	link(t, srvNS, srvIP+"/24", cliNS, cliIP+"/24")
	oc := startOcserv(t, srvNS, srvIP, o)
	before := routes(t, cliNS)

	var extra []string
	if !o.dtls {
		extra = append(extra, "--no-dtls")
	}
	c := startClient(t, cliNS, &vpnServer{ns: srvNS, ip: srvIP, pin: oc.pin}, testPassword, true, extra...)
	if a, err := netip.ParseAddr(c.addr); err != nil || !netip.MustParsePrefix(ocservNetwork).Contains(a) || c.addr == ocservTunnelIP {
		t.Fatalf("vpnc got address %s, want one of ocserv's pool %s", c.addr, ocservNetwork)
	}
	waitTunnelConfig(t, cliNS, "kvpnc0", c.addr, ocservRoute)
	// ocserv's view of the session: our address, its own end of the
	// point-to-point tun, and the TLS version.
	info := srvNS.run(t, "occtl", "-s", oc.occtlSocket, "show", "user", testUser)
	for _, want := range []string{"IPv4: " + c.addr + " ", "P-t-P IPv4: " + ocservTunnelIP, "TLS ciphersuite: (" + wantVersion + ")"} {
		if !strings.Contains(info, want) {
			t.Fatalf("occtl show user does not say %q:\n%s", want, info)
		}
	}

	wantTransport := "transport tls/"
	if o.dtls {
		wantTransport = "transport dtls/"
	}
	if !strings.Contains(c.proc.Out.String(), wantTransport) {
		t.Fatalf("vpnc does not report %q:\n%s", wantTransport, c.proc.Out.String())
	}
	countUDP(t, srvNS)
	ping(t, cliNS, ocservTunnelIP)
	ping(t, srvNS, c.addr)
	size := bulkSize(32 << 20)
	udpBefore := udpBytes(t, srvNS)
	d := bulkBothWays(t, srvNS, ocservTunnelIP, cliNS, size)
	checkUDPCarried(t, srvNS, udpBefore, size, o.dtls)
	t.Logf("vpnc -> ocserv: %d MiB each way in %s (%.2f Gbit/s per direction)", size>>20, d.Round(time.Millisecond),
		float64(size*8)/d.Seconds()/1e9)

	c.proc.Cmd.Process.Signal(syscall.SIGINT)
	if code := c.proc.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("vpnc exit code %d after SIGINT, want 0\n%s", code, c.proc.Out.String())
	}
	if after := routes(t, cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out, _ := cliNS.try("ip", "link", "show", "kvpnc0"); !strings.Contains(out, "does not exist") {
		t.Fatalf("interface kvpnc0 left behind: %s", out)
	}
	oc.proc.waitLog(t, "received BYE packet", 5*time.Second)
	oc.proc.waitLog(t, "user disconnected (reason: user disconnected", 5*time.Second)
}

package e2e

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// IPv6 inside the tunnel (vpnd's ipv6-network) and outside it (vpnd
// listening on [::], the client dialing an IPv6 server address, DTLS over
// UDP/IPv6), with vpnc and with the stock openconnect.

const (
	pool6          = "fd00:77::/64"
	tunnelServer6  = "fd00:77::1" // the pool's first address: vpnd's TUN
	serverVeth6    = "fd00:88::1"
	clientVeth6    = "fd00:88::2"
	ipv6PoolConfig = `ipv6-network = "` + pool6 + `"`
	listenIPv6     = `listen = "[::]:443"`
)

// newTopology6 is newTopology over a veth that has only IPv6 addresses;
// vpnd listens on [::] (TCP and, by default, UDP).
func newTopology6(t *testing.T, extra string) *topology {
	t.Helper()
	tp := &topology{srvNS: newNS(t, "srv6"), cliNS: newNS(t, "cli6")}
	link(t, tp.srvNS, serverVeth6+"/64", tp.cliNS, clientVeth6+"/64")
	tp.srv = startServer(t, tp.srvNS, serverVeth6, listenIPv6+"\n"+extra)
	return tp
}

// routes6 returns the namespace's IPv6 routing table, for before/after
// checks. Link-local routes are left out: the kernel adds the veth's own
// once its duplicate address detection ends, whenever that is.
func routes6(t *testing.T, ns *netns) string {
	t.Helper()
	var keep []string
	for _, l := range strings.Split(ns.run(t, "ip", "-6", "route", "show", "table", "all"), "\n") {
		if !strings.Contains(l, "fe80:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// route6Dev reports the device the IPv6 route to dst uses in ns, "" if
// there is no route.
func route6Dev(t *testing.T, ns *netns, dst string) string {
	t.Helper()
	out, err := ns.try("ip", "-6", "route", "get", dst)
	if err != nil {
		return ""
	}
	m := regexp.MustCompile(`\bdev (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no device in route to %s: %s", dst, out)
	}
	return m[1]
}

// waitSessionEnded6 waits for vpnd to log the end of the session that held
// addr6 (and so freed it).
func waitSessionEnded6(t *testing.T, s *vpnServer, addr6 string) {
	t.Helper()
	re := regexp.MustCompile(`msg="session ended".* address6=` + regexp.QuoteMeta(addr6) + `\b`)
	eventually(t, 5*time.Second, "vpnd ending the session of "+addr6, func() error {
		if !re.MatchString(s.proc.Out.String()) {
			return fmt.Errorf("not yet:\n%s", s.proc.Out.String())
		}
		return nil
	})
}

// stopVpnc interrupts vpnc and checks that it exits 0 and that the IPv4 and
// IPv6 routing tables are back as they were.
func stopVpnc(t *testing.T, c *vpnClient, before, before6 string) {
	t.Helper()
	c.proc.Cmd.Process.Signal(syscall.SIGINT)
	if code := c.proc.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("vpnc exit code %d after SIGINT, want 0\n%s", code, c.proc.Out.String())
	}
	if after := routes(t, c.ns); after != before {
		t.Fatalf("IPv4 routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := routes6(t, c.ns); after != before6 {
		t.Fatalf("IPv6 routes not restored:\nbefore:\n%s\nafter:\n%s", before6, after)
	}
	if out, _ := c.ns.try("ip", "link", "show", "kvpnc0"); !strings.Contains(out, "does not exist") {
		t.Fatalf("interface kvpnc0 left behind: %s", out)
	}
}

// TestIPv6Inside: vpnd with an IPv6 pool gives vpnc an IPv6 address; pings
// go both ways over IPv6 inside the tunnel and a hashed TCP transfer runs
// over IPv6. Without IPv6 split routes vpnc routes all of IPv6 into the
// tunnel (::/1 + 8000::/1); with them, only those and the pool.
func TestIPv6Inside(t *testing.T) {
	requireE2E(t)
	for _, tc := range []struct {
		name, extra string
		want        []string // IPv6 routes into kvpnc0
		notRouted   string   // an address that must not go into the tunnel
	}{
		{"full", "", []string{"::/1", "8000::/1"}, ""},
		{"split", `route = ["10.99.0.0/16", "fd00:99::/64"]`, []string{"fd00:99::/64", pool6}, "fd00:55::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopology(t, ipv6PoolConfig+"\n"+tc.extra)
			countUDP(t, tp.srvNS)
			before, before6 := routes(t, tp.cliNS), routes6(t, tp.cliNS)
			c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
			if c.addr6 == "" || !strings.HasPrefix(c.addr6, "fd00:77::") || c.addr6 == tunnelServer6 {
				t.Fatalf("vpnc reports no IPv6 address from the pool %s:\n%s", pool6, c.proc.Out.String())
			}
			if !strings.Contains(c.proc.Out.String(), "transport dtls/") {
				t.Fatalf("DTLS is not the transport:\n%s", c.proc.Out.String())
			}
			addrs := tp.cliNS.run(t, "ip", "-6", "addr", "show", "dev", "kvpnc0")
			if !strings.Contains(addrs, "inet6 "+c.addr6+"/128") {
				t.Fatalf("kvpnc0 does not hold %s/128:\n%s", c.addr6, addrs)
			}
			r6 := tp.cliNS.run(t, "ip", "-6", "route", "show", "dev", "kvpnc0")
			for _, want := range tc.want {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + ` `).MatchString(r6) {
					t.Fatalf("no IPv6 route %s into kvpnc0:\n%s", want, r6)
				}
			}
			if tc.notRouted != "" {
				if dev := route6Dev(t, tp.cliNS, tc.notRouted); dev == "kvpnc0" {
					t.Fatalf("split tunnel routes %s into the tunnel", tc.notRouted)
				}
			}
			if !regexp.MustCompile(`msg="tunnel up".* address6=` + regexp.QuoteMeta(c.addr6)).MatchString(tp.srv.proc.Out.String()) {
				t.Fatalf("vpnd's tunnel up does not name %s:\n%s", c.addr6, tp.srv.proc.Out.String())
			}

			ping(t, tp.cliNS, tunnelServer6)
			ping(t, tp.srvNS, c.addr6)
			ping(t, tp.cliNS, tunnelServer) // IPv4 still works beside it
			size := bulkSize(16 << 20)
			udpBefore := udpBytes(t, tp.srvNS)
			bulkBothWays(t, tp.srvNS, tunnelServer6, tp.cliNS, size)
			checkUDPCarried(t, tp.srvNS, udpBefore, size, true)

			// A packet from an IPv6 address the session does not own is
			// dropped and logged, like a spoofed IPv4 source.
			const spoofed = "fd00:77::dead"
			tp.cliNS.run(t, "ip", "addr", "add", spoofed+"/128", "dev", "kvpnc0", "nodad")
			if out, err := tp.cliNS.try("ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", spoofed, tunnelServer6); err == nil {
				t.Fatalf("ping from a spoofed IPv6 source got through:\n%s", out)
			}
			tp.srv.proc.waitLog(t, "source="+spoofed, 5*time.Second)

			stopVpnc(t, c, before, before6)
			waitSessionEnded6(t, tp.srv, c.addr6)
		})
	}
}

// TestIPv6Outside: the veth between the namespaces has only IPv6
// addresses; vpnd listens on [::], vpnc dials https://[addr]:443, DTLS
// comes up over UDP/IPv6 and carries the traffic (nft counter), with the
// tunnel MTU lowered for the 20 bytes the IPv6 header costs more. IPv4 and
// IPv6 both run inside; the full IPv6 tunnel keeps a host route to the
// server outside it.
func TestIPv6Outside(t *testing.T) {
	requireE2E(t)
	tp := newTopology6(t, ipv6PoolConfig)
	if out := tp.srvNS.run(t, "ss", "-ltnuH", "sport", "=", ":443"); !strings.Contains(out, "[::]:443") || strings.Contains(out, "0.0.0.0:443") {
		t.Fatalf("vpnd does not listen on [::]:443 only:\n%s", out)
	}
	countUDP(t, tp.srvNS)
	before, before6 := routes(t, tp.cliNS), routes6(t, tp.cliNS)
	// Without DTLS connection IDs (a kvpn extension that costs 9 bytes
	// more), the MTU is what ocserv's formula gives for an IPv6 link.
	c := startClientEnv(t, tp.cliNS, tp.srv, testPassword, true, []string{"KVPN_DTLS_CID=0"})
	out := c.proc.Out.String()
	if !strings.Contains(out, "transport dtls/") {
		t.Fatalf("DTLS over IPv6 did not come up:\n%s", out)
	}
	// 1500 - 40 IPv6 - 8 UDP - 37 DTLS - 1 type byte.
	if !strings.Contains(out, "MTU 1414,") {
		t.Fatalf("tunnel MTU is not 1414 for a 1500-byte IPv6 link:\n%s", out)
	}
	tp.srv.proc.waitLog(t, `msg="DTLS up"`, 5*time.Second)
	if !strings.Contains(tp.srv.proc.Out.String(), "from=["+clientVeth6+"]:") {
		t.Fatalf("vpnd's DTLS peer is not the client's IPv6 address:\n%s", tp.srv.proc.Out.String())
	}
	// The route to the server stays outside the full IPv6 tunnel.
	if dev := route6Dev(t, tp.cliNS, serverVeth6); dev == "kvpnc0" {
		t.Fatalf("the route to the server %s goes into the tunnel", serverVeth6)
	}
	if dev := route6Dev(t, tp.cliNS, "2001:db8::1"); dev != "kvpnc0" {
		t.Fatalf("full IPv6 tunnel: 2001:db8::1 goes to %s, not kvpnc0", dev)
	}

	ping(t, tp.cliNS, tunnelServer)
	ping(t, tp.srvNS, c.addr)
	ping(t, tp.cliNS, tunnelServer6)
	ping(t, tp.srvNS, c.addr6)
	for _, dst := range []string{tunnelServer, tunnelServer6} {
		size := bulkSize(16 << 20)
		udpBefore := udpBytes(t, tp.srvNS)
		bulkBothWays(t, tp.srvNS, dst, tp.cliNS, size)
		checkUDPCarried(t, tp.srvNS, udpBefore, size, true)
	}
	stopVpnc(t, c, before, before6)
	tp.srv.proc.waitLog(t, "client disconnected", 5*time.Second)
}

// TestIPv6Openconnect: the stock openconnect client against vpnd, IPv6
// inside (its vpnc-script configures the X-CSTP-Address-IP6 address) and
// IPv6 outside (it dials https://[addr]:443 and runs DTLS over UDP/IPv6).
func TestIPv6Openconnect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outside bool
	}{{"inside", false}, {"outside", true}} {
		t.Run(tc.name, func(t *testing.T) {
			requireOpenconnect(t)
			var tp *topology
			if tc.outside {
				tp = newTopology6(t, ipv6PoolConfig)
			} else {
				tp = newTopology(t, ipv6PoolConfig)
			}
			url := "https://" + net.JoinHostPort(tp.srv.ip, "443") + "/"
			before6 := routes6(t, tp.cliNS)
			oc := startOpenconnect(t, tp.cliNS, url, tp.srv.pin, true)
			addr := waitTunnelUp(t, tp.srv, 1)
			m := regexp.MustCompile(`msg="tunnel up".* address6=(\S+)`).FindStringSubmatch(tp.srv.proc.Out.String())
			if m == nil {
				t.Fatalf("vpnd gave openconnect no IPv6 address:\n%s", tp.srv.proc.Out.String())
			}
			addr6 := m[1]
			eventually(t, 10*time.Second, fmt.Sprintf("%s configured with %s", oc.ifname, addr6), func() error {
				out, err := tp.cliNS.try("ip", "-6", "addr", "show", "dev", oc.ifname)
				if err != nil || !strings.Contains(out, "inet6 "+addr6+"/") {
					return fmt.Errorf("%s does not hold %s (%v):\n%s", oc.ifname, addr6, err, out)
				}
				return nil
			})
			oc.proc.waitLog(t, "(DTLS1.2)-(PSK)", 10*time.Second)
			tp.srv.proc.waitLog(t, `msg="DTLS up"`, 5*time.Second)
			if tc.outside && !strings.Contains(tp.srv.proc.Out.String(), "from=["+clientVeth6+"]:") {
				t.Fatalf("openconnect's DTLS does not come from its IPv6 address:\n%s", tp.srv.proc.Out.String())
			}
			countUDP(t, tp.srvNS)
			ping(t, tp.cliNS, tunnelServer6)
			ping(t, tp.srvNS, addr6)
			ping(t, tp.cliNS, tunnelServer)
			ping(t, tp.srvNS, addr)
			size := bulkSize(16 << 20)
			udpBefore := udpBytes(t, tp.srvNS)
			bulkBothWays(t, tp.srvNS, tunnelServer6, tp.cliNS, size)
			checkUDPCarried(t, tp.srvNS, udpBefore, size, true)

			interruptOpenconnect(t, oc)
			waitSessionEnded6(t, tp.srv, addr6)
			if after := routes6(t, tp.cliNS); after != before6 {
				t.Fatalf("IPv6 routes not restored:\nbefore:\n%s\nafter:\n%s", before6, after)
			}
		})
	}
}

// TestIPv6VpncToOcserv: our vpnc against the stock ocserv with an
// ipv6-network: vpnc takes the X-CSTP-Address-IP6 ocserv sends (and, as
// ocserv pushes only an IPv4 route, routes all of IPv6 into the tunnel),
// pings ocserv's IPv6 end of the tunnel and is pinged back.
func TestIPv6VpncToOcserv(t *testing.T) {
	requireOcserv(t)
	const srvIP, cliIP = "192.168.88.1", "192.168.88.2"
	srvNS, cliNS := newNS(t, "osrv6"), newNS(t, "cli6")
	link(t, srvNS, srvIP+"/24", cliNS, cliIP+"/24")
	oc := startOcserv(t, srvNS, srvIP, ocservOpts{dtls: true, extra: "ipv6-network = fd00:98::/64"})
	before, before6 := routes(t, cliNS), routes6(t, cliNS)
	c := startClient(t, cliNS, &vpnServer{ns: srvNS, ip: srvIP, pin: oc.pin}, testPassword, true)
	if c.addr6 == "" || !strings.HasPrefix(c.addr6, "fd00:98::") {
		t.Fatalf("vpnc took no IPv6 address from ocserv's pool:\n%s", c.proc.Out.String())
	}
	info := srvNS.run(t, "occtl", "-s", oc.occtlSocket, "show", "user", testUser)
	if !strings.Contains(info, "IPv6: "+c.addr6) {
		t.Fatalf("occtl does not show IPv6 %s:\n%s", c.addr6, info)
	}
	m := regexp.MustCompile(`P-t-P IPv6: (\S+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("occtl shows no P-t-P IPv6 address:\n%s", info)
	}
	ptp6 := m[1]
	if dev := route6Dev(t, cliNS, ptp6); dev != "kvpnc0" {
		t.Fatalf("ocserv's IPv6 end %s is routed to %q, not kvpnc0", ptp6, dev)
	}
	ping(t, cliNS, ptp6)
	ping(t, srvNS, c.addr6)
	ping(t, cliNS, ocservTunnelIP)
	stopVpnc(t, c, before, before6)
}

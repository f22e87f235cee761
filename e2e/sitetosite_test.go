package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Site-to-site addresses: LAN A behind gatewayA (vpnc, user alice), LAN B
// behind gatewayB (vpnd), and a road warrior (user carol) on its own link
// to gatewayB.
const (
	lanA        = "192.168.10.0/24"
	hostAIP     = "192.168.10.2"
	gwALanIP    = "192.168.10.1"
	hostBIP     = "192.168.20.2"
	gwBLanIP    = "192.168.20.1"
	carolVeth   = "192.168.78.2"
	gwBCarolIP  = "192.168.78.1"
	gwAFixed    = "10.77.0.10"
	spoofedAddr = "192.168.10.99"
)

// TestSiteToSite: hostA - gatewayA (vpnc) == gatewayB (vpnd) - hostB. The
// two LANs reach each other through the tunnel in both directions, without
// NAT; a second user of the same vpnd can neither reach LAN A nor send with
// a source address from it.
func TestSiteToSite(t *testing.T) {
	requireE2E(t)
	hostA, gwA, gwB, hostB, carol := newNS(t, "hosta"), newNS(t, "gwa"), newNS(t, "gwb"), newNS(t, "hostb"), newNS(t, "carol")
	link(t, hostA, hostAIP+"/24", gwA, gwALanIP+"/24")
	link(t, gwA, clientVeth+"/24", gwB, serverVeth+"/24")
	link(t, gwB, gwBLanIP+"/24", hostB, hostBIP+"/24")
	link(t, carol, carolVeth+"/24", gwB, gwBCarolIP+"/24")
	hostA.run(t, "ip", "route", "add", "default", "via", gwALanIP)
	hostB.run(t, "ip", "route", "add", "default", "via", gwBLanIP)
	for _, gw := range []*netns{gwA, gwB} {
		gw.run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	// Count, on each host, packets from the addresses that matter, so the
	// test sees what arrived rather than what a ping concluded.
	nftCounters(t, hostA, "10.77.0.0/24")
	nftCounters(t, hostB, hostAIP, spoofedAddr)

	srv := startServerUsers(t, gwB, serverVeth, fmt.Sprintf(`route = ["192.168.20.0/24"]
restrict-user-to-routes = true

[users.%s]
ipv4 = %q
iroute = [%q]
`, testUser, gwAFixed, lanA), "carol")
	// vpnd routes LAN A into its TUN device from the start.
	if r := gwB.run(t, "ip", "-4", "route", "show", lanA); !strings.Contains(r, "dev kvpns0") {
		t.Fatalf("no route for %s into the TUN device on gatewayB:\n%s", lanA, r)
	}

	gw := startClient(t, gwA, srv, testPassword, true)
	if gw.addr != gwAFixed {
		t.Fatalf("gatewayA got %s, want its fixed address %s", gw.addr, gwAFixed)
	}
	if r := gwA.run(t, "ip", "-4", "route", "show", "192.168.20.0/24"); !strings.Contains(r, "dev kvpnc0") {
		t.Fatalf("vpnc did not route LAN B into the tunnel:\n%s", r)
	}
	ping(t, hostA, hostBIP)
	ping(t, hostB, hostAIP)
	bulkBothWays(t, hostB, hostBIP, hostA, bulkSize(4<<20))
	bulkBothWays(t, hostA, hostAIP, hostB, bulkSize(4<<20))
	if n := nftCount(t, hostB, hostAIP); n == 0 {
		t.Fatalf("hostB saw no packet from %s: the traffic was translated or went elsewhere", hostAIP)
	}

	// carol: the global route list (LAN B) only.
	carolSrv := *srv
	carolSrv.ip = gwBCarolIP
	cc := startClient(t, carol, &carolSrv, testPassword, true, "-u", "carol")
	if cc.addr == gwAFixed {
		t.Fatalf("carol got alice's fixed address %s", cc.addr)
	}
	ping(t, carol, hostBIP)

	// carol routes LAN A into her tunnel herself: vpnd does not let it out.
	carol.run(t, "ip", "route", "add", lanA, "dev", "kvpnc0")
	if out, err := carol.try("ping", "-c", "3", "-i", "0.2", "-W", "1", hostAIP); err == nil {
		t.Fatalf("carol reached LAN A:\n%s", out)
	}
	waitLogLine(t, srv.proc, "outside the user's routes", "carol", hostAIP)
	if n := nftCount(t, hostA, "10.77.0.0/24"); n != 0 {
		t.Fatalf("hostA saw %d packets from tunnel addresses", n)
	}

	// carol sends with a source address from LAN A: dropped as spoofed.
	carol.run(t, "ip", "addr", "add", spoofedAddr+"/32", "dev", "kvpnc0")
	if out, err := carol.try("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoofedAddr, hostBIP); err == nil {
		t.Fatalf("ping from a spoofed LAN A address got answers:\n%s", out)
	}
	waitLogLine(t, srv.proc, "spoofed source address", "carol", spoofedAddr)
	if n := nftCount(t, hostB, spoofedAddr); n != 0 {
		t.Fatalf("hostB received %d packets with carol's spoofed source %s", n, spoofedAddr)
	}

	// The site link is unaffected by all that.
	ping(t, hostA, hostBIP)
}

// nftCounters adds a table kvpn_e2e to ns that counts incoming packets
// from each source (an address or a network). The namespace's deletion
// removes it.
func nftCounters(t *testing.T, ns *netns, sources ...string) {
	t.Helper()
	ns.run(t, "nft", "add", "table", "ip", "kvpn_e2e")
	ns.run(t, "nft", "add", "chain", "ip", "kvpn_e2e", "in", "{ type filter hook input priority 0; policy accept; }")
	for _, s := range sources {
		ns.run(t, "nft", "add", "rule", "ip", "kvpn_e2e", "in", "ip", "saddr", s, "counter", "comment", strconv.Quote(s))
	}
}

var nftPackets = regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "([^"]+)"`)

// nftCount returns the packets counted from source by nftCounters.
func nftCount(t *testing.T, ns *netns, source string) int {
	t.Helper()
	out := ns.run(t, "nft", "list", "chain", "ip", "kvpn_e2e", "in")
	for _, m := range nftPackets.FindAllStringSubmatch(out, -1) {
		if m[2] == source {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	t.Fatalf("no counter for %s:\n%s", source, out)
	return 0
}

// waitLogLine waits until one line of p's output contains all of parts.
func waitLogLine(t *testing.T, p *proc, parts ...string) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("%s logging a line with %q", p.Name, parts), func() error {
	lines:
		for _, line := range strings.Split(p.Out.String(), "\n") {
			for _, s := range parts {
				if !strings.Contains(line, s) {
					continue lines
				}
			}
			return nil
		}
		return fmt.Errorf("not found in:\n%s", p.Out.String())
	})
}

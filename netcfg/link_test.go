package netcfg_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kvpn/internal/testenv"
	"kvpn/netcfg"
)

// The link tests run in a private network namespace (see testenv).
func TestMain(m *testing.M) { os.Exit(testenv.MainInNetNS(m)) }

// uplink builds the test namespace's "internet": a veth kvu0 (peer kvu1)
// with 192.0.2.1/24 and 2001:db8:1::1/64, default routes via .254 and ::fe,
// and a TUN kvd0, down. Devices are deleted at the end (and die with the
// namespace anyway).
func uplink(t *testing.T) {
	testenv.RequireNetNS(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kvu0"}, PeerName: "kvu1"}
	must(netlink.LinkAdd(veth))
	t.Cleanup(func() { netlink.LinkDel(veth) })
	newTUN(t, "kvd0")

	up, err := netlink.LinkByName("kvu0")
	must(err)
	peer, err := netlink.LinkByName("kvu1")
	must(err)
	// No IPv6 link-local addresses on the veths: the kernel adds them when
	// carrier comes up, asynchronously, and would blur the before/after
	// comparison.
	for _, l := range []netlink.Link{up, peer} {
		must(netlink.LinkSetIP6AddrGenMode(l, 1)) // IN6_ADDR_GEN_MODE_NONE
	}
	must(netlink.AddrAdd(up, addr("192.0.2.1/24")))
	a6 := addr("2001:db8:1::1/64")
	a6.Flags = unix.IFA_F_NODAD
	must(netlink.AddrAdd(up, a6))
	must(netlink.LinkSetUp(peer))
	must(netlink.LinkSetUp(up))
	for _, gw := range []string{"192.0.2.254", "2001:db8:1::fe"} {
		must(netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(gw)}))
	}
	// When the veth carrier comes up (asynchronously, via linkwatch), IPv6
	// adds the local route of 2001:db8:1::1 and an ff00::/8 route per veth.
	// Wait for that so it does not land between two snapshots.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s := snapshot(t)
		if strings.Contains(s, "route 2001:db8:1::1/128") && multicastRoutes(t) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplink did not settle:\n%s", s)
		}
	}
}

// multicastRoutes counts the kernel's ff00::/8 routes, which snapshot
// leaves out.
func multicastRoutes(t *testing.T) int {
	t.Helper()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.IsMulticast() {
			n++
		}
	}
	return n
}

// newTUN creates a TUN the way the tun package does (not persistent: it
// vanishes when its fd closes) and returns the function that closes it.
func newTUN(t *testing.T, name string) (closeTUN func()) {
	t.Helper()
	tt := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI, NonPersist: true, Queues: 1}
	if err := netlink.LinkAdd(tt); err != nil {
		t.Fatal(err)
	}
	closeTUN = func() {
		for _, f := range tt.Fds {
			f.Close()
		}
	}
	t.Cleanup(closeTUN)
	return closeTUN
}

func addr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// snapshot renders links, addresses and routes (all tables, both families)
// as sorted lines, leaving out what changes by itself (lifetimes, counters).
func snapshot(t *testing.T) string {
	t.Helper()
	var lines []string
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		a := l.Attrs()
		// IFF_RUNNING follows carrier, which the kernel's linkwatch
		// updates asynchronously after a veth comes up: not ours.
		lines = append(lines, fmt.Sprintf("link %d %s mtu %d flags %v", a.Index, a.Name, a.MTU, a.Flags&^net.FlagRunning))
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		lines = append(lines, fmt.Sprintf("addr %s dev %d flags %#x scope %d", a.IPNet, a.LinkIndex, a.Flags, a.Scope))
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL && r.Dst != nil && r.Dst.IP.IsMulticast() {
			// The kernel's ff00::/8 route of a link that came up, added
			// asynchronously (a TUN a test had just brought up made two
			// snapshots differ under load): nothing netcfg sets.
			continue
		}
		lines = append(lines, fmt.Sprintf("route %v via %v dev %d src %v table %d type %d scope %d proto %d metric %d",
			r.Dst, r.Gw, r.LinkIndex, r.Src, r.Table, r.Type, r.Scope, r.Protocol, r.Priority))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// routeTo is the kernel's answer to `ip route get dst`: gateway and device.
func routeTo(t *testing.T, dst string) string {
	t.Helper()
	rs, err := netlink.RouteGet(net.ParseIP(dst))
	if err != nil || len(rs) == 0 {
		t.Fatalf("route get %s: %v", dst, err)
	}
	l, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("via %v dev %s", rs[0].Gw, l.Attrs().Name)
}

func TestLinkRoutesRestore(t *testing.T) {
	uplink(t)
	before := snapshot(t)
	c := netcfg.New()
	t.Cleanup(func() { c.Restore() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Pin the servers first: via the gateway, directly connected, IPv6.
	for _, s := range []string{"198.51.100.7", "192.0.2.77", "2001:db8:99::7", "192.0.2.1"} {
		must(c.PinHostRoute(netip.MustParseAddr(s)))
	}
	pinned := snapshot(t)
	must(c.PinHostRoute(netip.MustParseAddr("198.51.100.7"))) // identical pin exists: no-op
	if snapshot(t) != pinned {
		t.Error("second PinHostRoute changed the tables")
	}
	for _, want := range []string{
		"route 198.51.100.7/32 via 192.0.2.254",
		"route 192.0.2.77/32 via <nil>",
		"route 2001:db8:99::7/128 via 2001:db8:1::fe",
	} {
		if !strings.Contains(pinned, want) {
			t.Errorf("missing %q in\n%s", want, pinned)
		}
	}
	if strings.Contains(pinned, "route 192.0.2.1/32 via <nil> dev 2 src <nil> table 254") {
		t.Error("pinned a local address")
	}

	// The tunnel: address, MTU, up, and routes that cover everything.
	must(c.SetLink("kvd0", netip.MustParsePrefix("10.77.0.2/24"), 1300))
	tunLink, err := netlink.LinkByName("kvd0")
	must(err)
	if a := tunLink.Attrs(); a.MTU != 1300 || a.Flags&net.FlagUp == 0 {
		t.Errorf("kvd0: mtu %d flags %v", a.MTU, a.Flags)
	}
	for _, dst := range []string{"0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1", "10.1.2.3/16"} {
		must(c.AddRoute(netip.MustParsePrefix(dst), "kvd0"))
	}
	err = c.AddRoute(netip.MustParsePrefix("0.0.0.0/1"), "kvd0")
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "0.0.0.0/1 dev kvd0") {
		t.Errorf("duplicate AddRoute: %v", err)
	}

	for dst, want := range map[string]string{
		"198.51.100.7":   "via 192.0.2.254 dev kvu0",
		"2001:db8:99::7": "via 2001:db8:1::fe dev kvu0",
		"203.0.113.9":    "via <nil> dev kvd0",
		"10.1.99.99":     "via <nil> dev kvd0",
		"2001:db8:5::1":  "via <nil> dev kvd0",
	} {
		if got := routeTo(t, dst); got != want {
			t.Errorf("route to %s: %s, want %s", dst, got, want)
		}
	}
	if err := c.PinHostRoute(netip.MustParseAddr("203.0.113.9")); err == nil {
		t.Error("PinHostRoute pinned a path into the tunnel")
	}

	must(c.Restore())
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after Restore:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	must(c.Restore())
}

// Closing the TUN first removes its addresses and routes; Restore must then
// still succeed and undo the rest.
func TestRestoreAfterLinkGone(t *testing.T) {
	uplink(t)
	before := snapshot(t)
	closeTUN := newTUN(t, "kvgone0")
	c := netcfg.New()
	if err := c.PinHostRoute(netip.MustParseAddr("198.51.100.7")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLink("kvgone0", netip.MustParsePrefix("fd77::2/64"), 1400); err != nil {
		t.Fatal(err)
	}
	if err := c.AddRoute(netip.MustParsePrefix("0.0.0.0/1"), "kvgone0"); err != nil {
		t.Fatal(err)
	}
	closeTUN()
	if _, err := netlink.LinkByName("kvgone0"); err == nil {
		t.Fatal("TUN still exists after closing its fd")
	}
	if err := c.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after Restore:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// What was configured before SetLink stays configured after Restore.
func TestSetLinkKeepsExisting(t *testing.T) {
	uplink(t)
	l, err := netlink.LinkByName("kvd0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, addr("10.77.0.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t)
	c := netcfg.New()
	if err := c.SetLink("kvd0", netip.MustParsePrefix("10.77.0.2/24"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after Restore:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestRemoveAddr removes an address that is there, one that is not, and
// none at all (a reconnect after one that brought no IPv6 address), the
// last two without error and without touching the link.
func TestRemoveAddr(t *testing.T) {
	uplink(t)
	l, err := netlink.LinkByName("kvd0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, addr("10.77.0.2/24")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{netip.MustParsePrefix("10.77.0.2/24"), netip.MustParsePrefix("10.77.0.2/24"), {}} {
		if err := netcfg.RemoveAddr("kvd0", p); err != nil {
			t.Fatalf("RemoveAddr(%v): %v", p, err)
		}
	}
	if as, _ := netlink.AddrList(l, netlink.FAMILY_V4); len(as) != 0 {
		t.Fatalf("addresses left: %v", as)
	}
}

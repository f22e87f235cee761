package netcfg_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kvpn/netcfg"
)

// routeErr is the error of `ip route get dst` (nil: there is a route).
func routeErr(dst string) error {
	_, err := netlink.RouteGet(net.ParseIP(dst))
	return err
}

// TestUnreachableRoute: the IPv6 black hole of an IPv4-only full tunnel.
// While it is in place, global IPv6 destinations are unreachable (not sent
// out of the physical link's default route), the connected prefix and
// link-local and loopback addresses still work; Restore removes it and the
// journal, and RecoverRoutes removes it after a crash.
func TestUnreachableRoute(t *testing.T) {
	uplink(t)
	before := snapshot(t)
	journal := filepath.Join(t.TempDir(), "routes.kvpn-undo")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	must(err)
	must(netlink.LinkSetUp(lo))
	if err := routeErr("2001:db8:99::1"); err != nil {
		t.Fatalf("before: no IPv6 default route: %v", err)
	}
	blackhole := func(c *netcfg.Changes) {
		t.Helper()
		c.SetJournal(journal)
		for _, dst := range []string{"::/1", "8000::/1"} {
			must(c.UnreachableRoute(netip.MustParsePrefix(dst)))
		}
	}

	c := netcfg.New()
	t.Cleanup(func() { c.Restore() })
	blackhole(c)
	for _, dst := range []string{"2001:db8:99::1", "2606:4700::1111", "64:ff9b::1"} {
		if err := routeErr(dst); !errors.Is(err, unix.EHOSTUNREACH) && !errors.Is(err, unix.ENETUNREACH) {
			t.Errorf("route get %s while black-holed: %v, want unreachable", dst, err)
		}
	}
	for dst, want := range map[string]string{
		"2001:db8:1::77": "via <nil> dev kvu0", // the connected LAN prefix
		"fe80::1":        "via <nil> dev kvu0", // link-local (fe80::/64 of the uplink is more specific)
	} {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: mustLink(t, "kvu0"), Dst: &net.IPNet{IP: net.ParseIP("fe80::"), Mask: net.CIDRMask(64, 128)}}); err != nil && !errors.Is(err, unix.EEXIST) {
			t.Fatal(err)
		}
		if got := routeTo(t, dst); got != want {
			t.Errorf("route to %s: %s, want %s", dst, got, want)
		}
	}
	for _, dst := range []string{"::1", "2001:db8:1::1"} { // local table first
		if err := routeErr(dst); err != nil {
			t.Errorf("route get %s (local) while black-holed: %v", dst, err)
		}
	}
	s := snapshot(t)
	for _, want := range []string{"route ::/1 via <nil> dev 1 src <nil> table 254 type 7 scope 0 proto 107",
		"route 8000::/1 via <nil> dev 1 src <nil> table 254 type 7 scope 0 proto 107"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	if got := journalDsts(t, journal); got != "::/1 8000::/1" {
		t.Errorf("journal lists %q", got)
	}
	// Someone else's route at the same place is not taken over.
	if err := netcfg.New().UnreachableRoute(netip.MustParsePrefix("::/1")); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second UnreachableRoute: %v, want EEXIST", err)
	}
	must(c.Restore())
	must(netlink.RouteDel(&netlink.Route{LinkIndex: mustLink(t, "kvu0"), Dst: &net.IPNet{IP: net.ParseIP("fe80::"), Mask: net.CIDRMask(64, 128)}}))
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after Restore:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		t.Errorf("journal left after Restore: %v", err)
	}

	// A run that dies leaves the black hole (it is not the TUN's): the
	// next run's RecoverRoutes removes it.
	blackhole(netcfg.New())
	if n, err := netcfg.RecoverRoutes(journal); n != 2 || err != nil {
		t.Fatalf("RecoverRoutes = %d, %v; want 2", n, err)
	}
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after RecoverRoutes:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func mustLink(t *testing.T, name string) int {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// TestHostAddrs: every address on the host's links, without the named one's.
func TestHostAddrs(t *testing.T) {
	uplink(t)
	if err := netlink.AddrAdd(mustLinkObj(t, "kvd0"), addr("10.77.0.2/24")); err != nil {
		t.Fatal(err)
	}
	all, err := netcfg.HostAddrs("")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.1", "2001:db8:1::1", "10.77.0.2"} {
		if !slices.Contains(all, netip.MustParseAddr(a)) {
			t.Errorf("HostAddrs() lacks %s: %v", a, all)
		}
	}
	some, err := netcfg.HostAddrs("kvd0")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(some, netip.MustParseAddr("10.77.0.2")) || !slices.Contains(some, netip.MustParseAddr("192.0.2.1")) {
		t.Errorf("HostAddrs(kvd0) = %v", some)
	}
}

func mustLinkObj(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

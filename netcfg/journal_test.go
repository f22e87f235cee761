package netcfg_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"kvpn/netcfg"
)

// TestExcludeRoute: split-exclude networks keep the path they had before
// the tunnel's routes, a network that already has its own route is left
// alone, and Restore removes exactly what was added (and the journal).
func TestExcludeRoute(t *testing.T) {
	uplink(t)
	newTUN(t, "kvx0")
	before := snapshot(t)
	journal := filepath.Join(t.TempDir(), "routes.kvpn-undo")
	c := netcfg.New()
	c.SetJournal(journal)
	t.Cleanup(func() { c.Restore() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.PinHostRoute(netip.MustParseAddr("198.51.100.7")))
	for _, x := range []string{"203.0.113.0/24", "192.0.2.128/25", "192.0.2.0/24", "2001:db8:7::/48"} {
		must(c.ExcludeRoute(netip.MustParsePrefix(x)))
	}
	must(c.SetLink("kvx0", netip.MustParsePrefix("10.77.0.2/24"), 0))
	for _, r := range []string{"0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"} {
		must(c.AddRoute(netip.MustParsePrefix(r), "kvx0"))
	}
	for dst, want := range map[string]string{
		"203.0.113.9":   "via 192.0.2.254 dev kvu0", // excluded, via the old gateway
		"192.0.2.200":   "via <nil> dev kvu0",       // excluded, directly connected
		"2001:db8:7::1": "via 2001:db8:1::fe dev kvu0",
		"198.51.100.7":  "via 192.0.2.254 dev kvu0", // the pinned server
		"198.51.100.8":  "via <nil> dev kvx0",       // everything else: the tunnel
		"2001:db8:8::1": "via <nil> dev kvx0",
		"203.0.114.1":   "via <nil> dev kvx0",
		"192.0.2.100":   "via <nil> dev kvu0", // the connected /24 itself
	} {
		if got := routeTo(t, dst); got != want {
			t.Errorf("route to %s: %s, want %s", dst, got, want)
		}
	}
	s := snapshot(t)
	kvu0, err := netlink.LinkByName("kvu0")
	must(err)
	for _, format := range []string{
		"route 203.0.113.0/24 via 192.0.2.254 dev %d src <nil> table 254 type 1 scope 0 proto 107",
		"route 192.0.2.128/25 via <nil> dev %d src <nil> table 254 type 1 scope 253 proto 107",
	} {
		if want := fmt.Sprintf(format, kvu0.Attrs().Index); !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	// The connected 192.0.2.0/24 was already outside the tunnel: no
	// second route, nothing journaled for it.
	if n := strings.Count(s, "route 192.0.2.0/24 "); n != 1 {
		t.Errorf("%d routes to 192.0.2.0/24", n)
	}
	if got := journalDsts(t, journal); got != "198.51.100.7/32 203.0.113.0/24 192.0.2.128/25 2001:db8:7::/48" {
		t.Errorf("journal lists %q", got)
	}
	if err := c.ExcludeRoute(netip.MustParsePrefix("172.16.0.0/12")); err == nil || !strings.Contains(err.Error(), "already routed into the tunnel") {
		t.Errorf("ExcludeRoute after tunnel routes: %v", err)
	}

	must(c.Restore())
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after Restore:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		t.Errorf("journal left after Restore: %v", err)
	}
}

func journalDsts(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries []struct{ Dst string }
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatal(err)
	}
	var dsts []string
	for _, e := range entries {
		dsts = append(dsts, e.Dst)
	}
	return strings.Join(dsts, " ")
}

// TestRecoverRoutes: a run dies without Restore (its TUN, and the routes
// into it, die with it); the next run's RecoverRoutes removes the pin and
// the exclude routes it left, but not a route someone else has put in the
// same place since.
func TestRecoverRoutes(t *testing.T) {
	uplink(t)
	before := snapshot(t)
	closeTUN := newTUN(t, "kvx1")
	journal := filepath.Join(t.TempDir(), "routes.kvpn-undo")
	if n, err := netcfg.RecoverRoutes(journal); n != 0 || err != nil {
		t.Fatalf("RecoverRoutes without a journal = %d, %v", n, err)
	}

	crashed := netcfg.New()
	crashed.SetJournal(journal)
	for _, err := range []error{
		crashed.PinHostRoute(netip.MustParseAddr("198.51.100.7")),
		crashed.ExcludeRoute(netip.MustParsePrefix("203.0.113.0/24")),
		crashed.ExcludeRoute(netip.MustParsePrefix("198.18.0.0/15")),
		crashed.SetLink("kvx1", netip.MustParsePrefix("10.77.0.2/24"), 0),
		crashed.AddRoute(netip.MustParsePrefix("0.0.0.0/1"), "kvx1"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	closeTUN()
	// After the crash an administrator replaced one of the routes with
	// their own (same destination and gateway, their protocol).
	uplinkLink, _ := netlink.LinkByName("kvu0")
	foreign := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(198, 18, 0, 0).To4(), Mask: net.CIDRMask(15, 32)},
		Gw: net.IPv4(192, 0, 2, 254), LinkIndex: uplinkLink.Attrs().Index}
	if err := netlink.RouteDel(&netlink.Route{Dst: foreign.Dst, Protocol: netcfg.RouteProtocol}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}

	n, err := netcfg.RecoverRoutes(journal)
	if n != 2 || err != nil {
		t.Fatalf("RecoverRoutes = %d, %v; want 2 routes deleted", n, err)
	}
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		t.Errorf("journal left after RecoverRoutes: %v", err)
	}
	if !strings.Contains(snapshot(t), "route 198.18.0.0/15 via 192.0.2.254") {
		t.Fatal("RecoverRoutes deleted a route that was not kvpn's")
	}
	if err := netlink.RouteDel(foreign); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t); after != before {
		t.Errorf("tables differ after RecoverRoutes:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A journal that is not kvpn's format is an error, and stays.
	os.WriteFile(journal, []byte("not json"), 0o600)
	if _, err := netcfg.RecoverRoutes(journal); err == nil {
		t.Error("RecoverRoutes accepted a corrupt journal")
	}
	if _, err := os.Stat(journal); err != nil {
		t.Errorf("corrupt journal removed: %v", err)
	}
}

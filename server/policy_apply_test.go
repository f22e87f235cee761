package server

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestSessionsSiteToSite(t *testing.T) {
	ts := newTestServer(t, siteConfig)
	if got := ts.routes(); !slices.Equal(got, []string{"192.168.10.0/24", "192.168.11.0/24", "192.168.30.0/24"}) {
		t.Fatalf("kernel routes %v", got)
	}
	// Another user never gets gwa's fixed address, even when asking for it.
	rw := ts.newSession("road warrior", netip.Addr{})
	if a, err := rw.attach(nil, netip.MustParseAddr("10.77.0.10"), netip.Prefix{}); err != nil || a == netip.MustParseAddr("10.77.0.10") {
		t.Fatalf("road warrior got %s, %v", a, err)
	}
	gwa := ts.connect(t, "gwa")
	if gwa.addr != netip.MustParseAddr("10.77.0.10") {
		t.Fatalf("gwa got %s", gwa.addr)
	}
	if got := ts.iroutes.lookup(netip.MustParseAddr("192.168.11.3")); got != gwa {
		t.Fatalf("iroute lookup %v", got)
	}
	if ts.iroutes.lookup(netip.MustParseAddr("192.168.30.3")) != nil {
		t.Fatal("gwc is not connected but its network routes somewhere")
	}
	// Sources: its own address and its networks, nothing else; the road
	// warrior may not use gwa's networks.
	if !checkOK(t, gwa, "10.77.0.10", "192.168.20.5") || !checkOK(t, gwa, "192.168.10.7", "192.168.20.5") {
		t.Error("gwa's own traffic dropped")
	}
	if checkOK(t, gwa, "192.168.12.7", "192.168.20.5") || checkOK(t, rw, "192.168.10.7", "192.168.20.5") {
		t.Error("spoofed source accepted")
	}
	if gwa.spoofed.Load() != 1 || rw.spoofed.Load() != 1 || ts.Counters.DropSpoofed.Load() != 2 {
		t.Errorf("spoof counters %d %d %d", gwa.spoofed.Load(), rw.spoofed.Load(), ts.Counters.DropSpoofed.Load())
	}
	// restrict-user-to-routes: the road warrior may reach 192.168.10.0/24
	// (it is in the global route list) but not gwc's network.
	if !checkOK(t, rw, rw.addr.String(), "192.168.10.7") || checkOK(t, rw, rw.addr.String(), "192.168.30.7") {
		t.Error("restrict-user-to-routes not applied")
	}
	if ts.Counters.DropRestricted.Load() != 1 {
		t.Errorf("restricted drops %d", ts.Counters.DropRestricted.Load())
	}
	pkt := ipv4Pkt("192.168.10.7", "192.168.20.5")
	if n := testing.AllocsPerRun(1000, func() { gwa.check(pkt) }); n != 0 {
		t.Errorf("check allocates %v times", n)
	}

	// A new login of gwa replaces the old session and takes over address
	// and networks.
	gwa2 := ts.connect(t, "gwa")
	if !gwa.ended || gwa2.addr != gwa.addr || ts.iroutes.lookup(netip.MustParseAddr("192.168.10.1")) != gwa2 {
		t.Fatalf("takeover: old ended %v, new address %s", gwa.ended, gwa2.addr)
	}
	// An older session of gwa that attaches after the newer one (its
	// reconnect raced the new login) yields: the newest stays.
	gwa3 := ts.newSession("gwa", netip.MustParseAddr("192.0.2.98"))
	gwa4 := ts.newSession("gwa", netip.MustParseAddr("192.0.2.97"))
	gwa2.end("test")
	if _, err := gwa4.attach(nil, netip.Addr{}, netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	if _, err := gwa3.attach(nil, netip.Addr{}, netip.Prefix{}); err == nil || !gwa3.ended || gwa4.ended {
		t.Fatalf("older session attaching after a newer one: %v (older ended %v, newer ended %v)", err, gwa3.ended, gwa4.ended)
	}
	gwa2 = gwa4
	// Ending it unroutes its networks but leaves the kernel routes (so
	// that their packets do not leave by the default route).
	gwa2.end("test")
	if ts.iroutes.lookup(netip.MustParseAddr("192.168.10.1")) != nil || len(ts.installed) != 3 {
		t.Fatalf("after end: %v, kernel %v", ts.iroutes.lookup(netip.MustParseAddr("192.168.10.1")), ts.routes())
	}
}

// TestApplyPolicySwap: a reload swaps users, routes and iroutes of
// connected sessions at once, and refuses bad input without changing anything.
func TestApplyPolicySwap(t *testing.T) {
	ts := newTestServer(t, siteConfig)
	gwa, gwc, rw := ts.connect(t, "gwa"), ts.connect(t, "gwc"), ts.connect(t, "road warrior")
	before := ts.policy.Load()

	// Bad input: nothing changes.
	for _, body := range []string{
		strings.Replace(siteConfig, `ipv4 = "10.77.0.10"`, `ipv4 = "10.77.0.1"`, 1),
		strings.Replace(siteConfig, `"192.168.30.0/24"]`, `"192.168.10.0/25"]`, 1),
	} {
		cfg := DefaultConfig(t.TempDir())
		if _, err := decodeInto(cfg, body); err != nil {
			t.Fatal(err)
		}
		if err := ts.ApplyPolicy(cfg); err == nil || !strings.Contains(err.Error(), "users.") {
			t.Errorf("bad config applied: %v", err)
		}
	}
	cfg := DefaultConfig(t.TempDir())
	decodeInto(cfg, strings.ReplaceAll(siteConfig, "10.77.0.", "10.78.0."))
	if err := ts.ApplyPolicy(cfg); !errors.Is(err, errPoolChange) {
		t.Errorf("pool change: %v", err)
	}
	if ts.policy.Load() != before || len(ts.installed) != 3 || gwa.pol.Load() != before.users["gwa"] {
		t.Fatal("refused config changed something")
	}

	// gwa's second network moves to 192.168.12.0/24, gwc's table goes,
	// carol gets a fixed address, and 192.168.40.0/24 fails in the kernel.
	next := `ipv4-network = "10.77.0.0/24"
route = ["192.168.20.0/24"]
restrict-user-to-routes = true
[users.gwa]
ipv4 = "10.77.0.10"
iroute = ["192.168.10.0/24", "192.168.12.0/24"]
[users.carol]
ipv4 = "10.77.0.20"
[users.gwd]
iroute = ["192.168.40.0/24"]
`
	ts.fail[netip.MustParsePrefix("192.168.40.0/24")] = true
	cfg = DefaultConfig(t.TempDir())
	decodeInto(cfg, next)
	err := ts.ApplyPolicy(cfg)
	if err == nil || !strings.Contains(err.Error(), "users.gwd.iroute: route 192.168.40.0/24") || strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("want exactly the failed route reported, got %v", err)
	}
	if got := ts.routes(); !slices.Equal(got, []string{"192.168.10.0/24", "192.168.12.0/24"}) {
		t.Fatalf("kernel routes after reload %v", got)
	}
	for _, tc := range []struct {
		addr string
		want *Session
	}{{"192.168.12.1", gwa}, {"192.168.10.1", gwa}, {"192.168.11.1", nil}, {"192.168.30.1", nil}} {
		if got := ts.iroutes.lookup(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("after reload, %s routes to %v, want %v", tc.addr, got, tc.want)
		}
	}
	if !checkOK(t, gwa, "192.168.12.5", "192.168.20.5") || checkOK(t, gwa, "192.168.11.5", "192.168.20.5") {
		t.Error("gwa's sources not swapped")
	}
	if checkOK(t, gwc, "192.168.30.5", "192.168.20.5") || checkOK(t, rw, rw.addr.String(), "192.168.10.7") {
		t.Error("gwc or road warrior kept old rights")
	}
	if !slices.Equal(gwa.pol.Load().routes, pfx("192.168.20.0/24")) {
		t.Errorf("gwa's pushed routes %v", gwa.pol.Load().routes)
	}
	// The pool no longer hands out carol's new address.
	for range 300 {
		a, err := ts.pool.Get(netip.Addr{})
		if err != nil {
			break
		}
		if a == netip.MustParseAddr("10.77.0.20") || a == netip.MustParseAddr("10.77.0.10") {
			t.Fatalf("pool handed out the fixed address %s", a)
		}
	}

	// A connected user whose fixed address changes keeps the old one
	// until it logs in again, and ApplyPolicy says so.
	cfg = DefaultConfig(t.TempDir())
	decodeInto(cfg, strings.Replace(next, `"10.77.0.10"`, `"10.77.0.11"`, 1))
	delete(ts.fail, netip.MustParsePrefix("192.168.40.0/24"))
	err = ts.ApplyPolicy(cfg)
	if err == nil || !strings.Contains(err.Error(), "users.gwa.ipv4: session") || !strings.Contains(err.Error(), "keeps 10.77.0.10") {
		t.Fatalf("address change not reported: %v", err)
	}
	if !ts.installed[netip.MustParsePrefix("192.168.40.0/24")] {
		t.Error("route that failed before not retried")
	}
	ts.removeRoutes()
	if len(ts.installed) != 0 {
		t.Errorf("routes left after removeRoutes: %v", ts.routes())
	}
}

// decodeInto decodes a TOML body into cfg as LoadConfig does, without
// validating (ApplyPolicy validates).
func decodeInto(cfg *Config, body string) (*Config, error) {
	_, err := toml.Decode(body, cfg)
	return cfg, err
}

// TestApplyPolicyDualStack: reloading an unchanged configuration with an
// IPv6 pool reports nothing for a site with a fixed IPv4 address (its
// session is in byAddr under both addresses, and only the IPv4 one is what
// ipv4 fixes).
func TestApplyPolicyDualStack(t *testing.T) {
	body := siteConfig + "\n"
	body = strings.Replace(body, `restrict-user-to-routes = true`, "restrict-user-to-routes = true\nipv6-network = \"fd00:77::/64\"", 1)
	ts := newTestServer(t, body)
	gwa := ts.connect(t, "gwa")
	if !gwa.addr6.IsValid() {
		t.Fatalf("gwa has no IPv6 address")
	}
	for range 20 { // map order varies
		cfg := DefaultConfig(t.TempDir())
		if _, err := decodeInto(cfg, body); err != nil {
			t.Fatal(err)
		}
		if err := ts.ApplyPolicy(cfg); err != nil {
			t.Fatalf("reload of the same configuration: %v", err)
		}
	}
}

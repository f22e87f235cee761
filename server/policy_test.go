package server

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"kvpn/netcfg"
)

const siteConfig = `ipv4-network = "10.77.0.0/24"
listen = "192.0.2.1:443"
route = ["192.168.20.0/24", "192.168.10.0/24", "172.16.0.0/12"]
dns = ["192.168.20.53"]
restrict-user-to-routes = true

[users.gwa]
ipv4 = "10.77.0.10"
iroute = ["192.168.10.0/24", "192.168.11.0/24"]

[users.gwc]
iroute = ["192.168.30.0/24"]
route = ["192.168.20.0/24", "192.168.10.0/23"]

[users."road warrior"]
`

func pfx(s ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, x := range s {
		ps = append(ps, netip.MustParsePrefix(x))
	}
	return ps
}

func TestUsersConfig(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, siteConfig), "/state")
	if err != nil {
		t.Fatal(err)
	}
	pol := cfg.pol
	gwa, gwc, rw := pol.users["gwa"], pol.users["gwc"], pol.users["road warrior"]
	if gwa == nil || gwc == nil || rw == nil || len(pol.users) != 3 {
		t.Fatalf("users: %+v", pol.users)
	}
	if gwa.ipv4 != netip.MustParseAddr("10.77.0.10") || !slices.Equal(gwa.iroutes, pfx("192.168.10.0/24", "192.168.11.0/24")) {
		t.Errorf("gwa: %+v", gwa)
	}
	// The global list without gwa's own network.
	if !slices.Equal(gwa.routes, pfx("192.168.20.0/24", "172.16.0.0/12")) {
		t.Errorf("gwa routes %v", gwa.routes)
	}
	if !gwa.exclusive() || !gwc.exclusive() || rw.exclusive() || pol.def.exclusive() {
		t.Error("exclusive: only users with ipv4 or iroute")
	}
	// Its own list; a route that contains (not lies inside) an iroute of
	// another user is fine.
	if gwc.ipv4.IsValid() || !slices.Equal(gwc.routes, pfx("192.168.20.0/24", "192.168.10.0/23")) {
		t.Errorf("gwc: %+v", gwc)
	}
	if !slices.Equal(rw.routes, cfg.routes) || !slices.Equal(pol.def.routes, cfg.routes) {
		t.Errorf("road warrior routes %v, default %v", rw.routes, pol.def.routes)
	}
	if pol.fixed[netip.MustParseAddr("10.77.0.10")] != "gwa" || len(pol.fixed) != 1 {
		t.Errorf("fixed %v", pol.fixed)
	}
	if pol.owner[netip.MustParsePrefix("192.168.30.0/24")] != "gwc" || len(pol.owner) != 3 {
		t.Errorf("owner %v", pol.owner)
	}
	if pol.user("nobody") != pol.def {
		t.Error("a user without a table gets the default policy")
	}
	// restrict-user-to-routes: the routes, vpnd's address and the DNS server.
	for _, tc := range []struct {
		u    *userPolicy
		dst  string
		want bool
	}{
		{gwa, "192.168.20.7", true}, {gwa, "172.20.1.1", true}, {gwa, "10.77.0.1", true},
		{gwa, "192.168.20.53", true}, {gwa, "192.168.30.1", false}, {gwa, "10.77.0.11", false},
		{gwa, "8.8.8.8", false}, {gwc, "192.168.11.1", true}, {gwc, "172.16.0.1", false},
		{rw, "192.168.10.1", true}, {rw, "192.168.30.1", false},
	} {
		if got := tc.u.allows(netip.MustParseAddr(tc.dst)); got != tc.want {
			t.Errorf("%s allows %s = %v, want %v", tc.u.name, tc.dst, got, tc.want)
		}
	}

	// Without restrict-user-to-routes, and for a full-tunnel user, anything goes.
	cfg, err = LoadConfig(writeConfig(t, strings.Replace(siteConfig, "restrict-user-to-routes = true", "", 1)), "/state")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.pol.users["gwa"].allows(netip.MustParseAddr("8.8.8.8")) {
		t.Error("unrestricted user may not send everywhere")
	}
	cfg, err = LoadConfig(writeConfig(t, "restrict-user-to-routes = true\n[users.x]\niroute = [\"192.168.1.0/24\"]\n"), "/state")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.pol.users["x"].allows(netip.MustParseAddr("8.8.8.8")) || !cfg.pol.def.allows(netip.MustParseAddr("8.8.8.8")) {
		t.Error("full-tunnel user restricted")
	}
}

// TestUsersConfigErrors: every bad [users.NAME] table is refused with an
// error naming the key, the user and the problem.
func TestUsersConfigErrors(t *testing.T) {
	const head = "ipv4-network = \"10.77.0.0/24\"\nlisten = \"192.0.2.1:443\"\n"
	for _, tc := range []struct{ body, want string }{
		{"[users.a]\niroutes = [\"192.168.1.0/24\"]\n", `unknown key "users.a.iroutes"`},
		{"[users.a]\niroute = [\"192.168.1.0/33\"]\n", `users.a.iroute: netip.ParsePrefix("192.168.1.0/33")`},
		{"[users.a]\niroute = [\"192.168.1.1/24\"]\n", `users.a.iroute: "192.168.1.1/24" has host bits set (did you mean 192.168.1.0/24?)`},
		{"[users.a]\niroute = [\"10.77.0.128/25\"]\n", "users.a.iroute: 10.77.0.128/25 overlaps ipv4-network 10.77.0.0/24"},
		{"[users.a]\niroute = [\"10.0.0.0/8\"]\n", "users.a.iroute: 10.0.0.0/8 overlaps ipv4-network"},
		{"[users.a]\niroute = [\"0.0.0.0/0\"]\n", "users.a.iroute: 0.0.0.0/0 would route everything to one client"},
		{"[users.a]\niroute = [\"192.0.2.0/24\"]\n", "users.a.iroute: 192.0.2.0/24 contains vpnd's own listen address 192.0.2.1"},
		{"[users.a]\niroute = [\"192.168.0.0/16\"]\n[users.b]\niroute = [\"192.168.1.0/24\"]\n", `users.b.iroute: 192.168.1.0/24 overlaps 192.168.0.0/16 of user "a"`},
		{"[users.a]\niroute = [\"192.168.1.0/24\", \"192.168.1.128/25\"]\n", "users.a.iroute: 192.168.1.128/25 overlaps 192.168.1.0/24 of the same user"},
		{"[users.a]\nipv4 = \"10.78.0.5\"\n", "users.a.ipv4: 10.78.0.5 is outside ipv4-network 10.77.0.0/24"},
		{"[users.a]\nipv4 = \"10.77.0.1\"\n", "users.a.ipv4: 10.77.0.1 is vpnd's own address in 10.77.0.0/24"},
		{"[users.a]\nipv4 = \"10.77.0.255\"\n", "users.a.ipv4: 10.77.0.255 is the broadcast address of 10.77.0.0/24"},
		{"[users.a]\nipv4 = \"10.77.0.0\"\n", "users.a.ipv4: 10.77.0.0 is the network address of 10.77.0.0/24"},
		{"[users.a]\nipv4 = \"fd00::5\"\n", `users.a.ipv4: "fd00::5" is not an IPv4 address`},
		{"[users.a]\nipv4 = \"ten\"\n", "users.a.ipv4: ParseAddr"},
		{"[users.a]\nipv4 = \"10.77.0.9\"\n[users.b]\nipv4 = \"10.77.0.9\"\n", `users.b.ipv4: 10.77.0.9 is also the address of user "a"`},
		{"[users.a]\niroute = [\"192.168.1.0/24\"]\nroute = [\"192.168.1.0/25\"]\n", "users.a.route: 192.168.1.0/25 lies inside the user's own iroute 192.168.1.0/24"},
		{"[users.a]\nroute = [\"192.168.1.1/24\"]\n", `users.a.route: "192.168.1.1/24" has host bits set`},
		// A split tunnel whose every route is behind the user would be a
		// full tunnel for it (found by FuzzSessionCheck).
		{"route = [\"192.168.10.0/24\"]\n[users.a]\niroute = [\"192.168.10.0/24\"]\n", "users.a.iroute: every global route lies inside the user's iroutes"},
		{"[users.\"a.b\"]\nroute = [\"x\"]\n", `users."a.b".route:`},
		{"[users.a]\nipv4 = 5\n", `users.a.ipv4`},
		// A user's own route list gets the checks of the global one.
		{"[users.a]\nroute = [\"192.0.2.0/24\"]\n", "users.a.route: 192.0.2.0/24 contains the server's listen address 192.0.2.1"},
		{"[users.a]\nroute = [\"default\", \"10.1.0.0/16\"]\n", `users.a.route: "default" (a full tunnel) already covers 10.1.0.0/16`},
		{"[users.a]\nroute = [\"10.1.0.0/16\", \"10.1.2.0/24\"]\n", "users.a.route: 10.1.0.0/16 and 10.1.2.0/24 overlap"},
		{"[users.a]\nroute = [\"10.1.0.0/16\", \"10.1.0.0/16\"]\n", "users.a.route: 10.1.0.0/16 is listed twice"},
	} {
		_, err := LoadConfig(writeConfig(t, head+tc.body), "/state")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q:\n got %v\nwant error containing %q", tc.body, err, tc.want)
		}
	}
}

// TestUserFullTunnel: route = ["default"] in a user's table gives that
// user a full tunnel (no split routes pushed), whatever the global list.
func TestUserFullTunnel(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "ipv4-network = \"10.77.0.0/24\"\nroute = [\"10.1.0.0/16\"]\n[users.a]\nroute = [\"default\"]\n"), "/state")
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.pol.users["a"]; a == nil || len(a.routes) != 0 {
		t.Fatalf("user a: %+v, want no split routes", a)
	}
	if !slices.Equal(cfg.pol.def.routes, pfx("10.1.0.0/16")) {
		t.Fatalf("default routes %v", cfg.pol.def.routes)
	}
}

func TestRouteTableLongestPrefix(t *testing.T) {
	a, b, c, d := &Session{id: 1}, &Session{id: 2}, &Session{id: 3}, &Session{id: 4}
	var rt routeTable
	if rt.lookup(netip.MustParseAddr("192.168.1.1")) != nil {
		t.Fatal("empty table found a session")
	}
	// Config never produces nested iroutes, but the table must still
	// pick the longest prefix.
	rt.set(netip.MustParsePrefix("192.168.0.0/16"), a)
	rt.set(netip.MustParsePrefix("192.168.1.0/24"), b)
	rt.set(netip.MustParsePrefix("192.168.1.128/25"), c)
	rt.set(netip.MustParsePrefix("fd00:1::/48"), d)
	for _, tc := range []struct {
		addr string
		want *Session
	}{
		{"192.168.2.1", a}, {"192.168.1.1", b}, {"192.168.1.200", c}, {"192.168.255.255", a},
		{"192.169.0.1", nil}, {"10.0.0.1", nil}, {"fd00:1::5", d}, {"fd00:2::5", nil},
	} {
		if got := rt.lookup(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("lookup %s = %v, want %v", tc.addr, got, tc.want)
		}
	}
	dst := netip.MustParseAddr("192.168.1.200")
	if n := testing.AllocsPerRun(1000, func() { rt.lookup(dst) }); n != 0 {
		t.Errorf("lookup allocates %v times", n)
	}
	rt.removeSession(c)
	if got := rt.lookup(dst); got != b {
		t.Errorf("after removing the /25: %v", got)
	}
	if !slices.Equal(rt.lens4, []int{24, 16}) || !slices.Equal(rt.lens6, []int{48}) {
		t.Errorf("lengths %v %v", rt.lens4, rt.lens6)
	}
	rt.reset()
	if rt.lookup(netip.MustParseAddr("192.168.1.1")) != nil || len(rt.lens4) != 0 {
		t.Error("reset left routes")
	}
}

// testServer is a Server without TUN device or listeners, with kernel route
// changes recorded instead of made.
type testServer struct {
	*Server
	installed map[netip.Prefix]bool
	fail      map[netip.Prefix]bool
}

func newTestServer(t *testing.T, body string) *testServer {
	t.Helper()
	cfg, err := LoadConfig(writeConfig(t, body), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{installed: map[netip.Prefix]bool{}, fail: map[netip.Prefix]bool{}}
	ts.Server = newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts.addRoute = func(p netip.Prefix) (*netcfg.Changes, error) {
		if ts.fail[p] {
			return nil, errors.New("refused by test")
		}
		if ts.installed[p] {
			t.Errorf("route %s installed twice", p)
		}
		ts.installed[p] = true
		c := netcfg.New()
		c.Undo("test route", func() error { delete(ts.installed, p); return nil })
		return c, nil
	}
	ts.polMu.Lock()
	err = ts.applyPolicy(cfg.pol)
	ts.polMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func (ts *testServer) routes() []string {
	var out []string
	for p := range ts.installed {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

// connect logs user in and attaches a session (without a channel).
func (ts *testServer) connect(t *testing.T, user string) *Session {
	t.Helper()
	sess := ts.newSession(user, netip.MustParseAddr("192.0.2.99"))
	if _, err := sess.attach(nil, netip.Addr{}, netip.Prefix{}); err != nil {
		t.Fatalf("attach %s: %v", user, err)
	}
	return sess
}

// ipv4Pkt is a minimal IPv4 header from src to dst.
func ipv4Pkt(src, dst string) []byte {
	p := make([]byte, 28)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func checkOK(t *testing.T, sess *Session, src, dst string) bool {
	t.Helper()
	ok, err := sess.check(ipv4Pkt(src, dst))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

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

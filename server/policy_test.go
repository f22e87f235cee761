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

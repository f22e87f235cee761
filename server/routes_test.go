package server

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestRouteConfigAccepted: split-include, split-exclude inside a full tunnel
// and inside split routes, ocserv's "default" and dotted masks.
func TestRouteConfigAccepted(t *testing.T) {
	for _, tc := range []struct {
		body             string
		include, exclude []netip.Prefix
	}{
		{`route = ["192.168.10.0/24", "10.0.0.0/8"]`, prefixes("192.168.10.0/24", "10.0.0.0/8"), nil},
		{`route = ["default"]`, nil, nil},
		{`route = ["0.0.0.0/0"]`, nil, nil},
		{`route = ["default"]` + "\n" + `no-route = ["192.168.5.0/24", "203.0.113.0/24"]`, nil, prefixes("192.168.5.0/24", "203.0.113.0/24")},
		{`no-route = ["192.168.5.0/255.255.255.0"]`, nil, prefixes("192.168.5.0/24")},
		{`route = ["192.168.0.0/255.255.0.0"]` + "\n" + `no-route = ["192.168.5.0/24"]`, prefixes("192.168.0.0/16"), prefixes("192.168.5.0/24")},
		// A split route that contains the listen address is fine once a
		// no-route carves the server out.
		{`listen = "192.168.77.1:443"` + "\n" + `route = ["192.168.0.0/16"]` + "\n" + `no-route = ["192.168.77.1/32"]`,
			prefixes("192.168.0.0/16"), prefixes("192.168.77.1/32")},
		// A full tunnel contains every listen address: clients pin a host
		// route to the server, as vpnc and openconnect's vpnc-script do.
		{`listen = "192.168.77.1:443"` + "\n" + `route = ["default"]`, nil, nil},
	} {
		cfg, err := LoadConfig(writeConfig(t, tc.body+"\n"), "/state")
		if err != nil {
			t.Errorf("config %q: %v", tc.body, err)
			continue
		}
		if !slices.Equal(cfg.routes, tc.include) || !slices.Equal(cfg.noRoutes, tc.exclude) {
			t.Errorf("config %q: routes %v no-routes %v, want %v %v", tc.body, cfg.routes, cfg.noRoutes, tc.include, tc.exclude)
		}
	}
}

// TestRouteConfigErrors: every bad route list is refused with an error
// naming the key and the problem.
func TestRouteConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`route = ["10.0.0.0/33"]`, `route: "10.0.0.0/33"`},
		{`route = ["10.0.0.0"]`, `route: "10.0.0.0" is not a CIDR`},
		{`route = ["10.0.0.1/8"]`, `route: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{`route = ["10.0.0.0/255.0.255.0"]`, `non-contiguous netmask`},
		{`route = ["10.0.0.0/8", "10.0.0.0/8"]`, `route: 10.0.0.0/8 is listed twice`},
		{`route = ["10.0.0.0/8", "10.1.0.0/16"]`, `route: 10.0.0.0/8 and 10.1.0.0/16 overlap (10.1.0.0/16 lies inside 10.0.0.0/8)`},
		{`route = ["10.1.0.0/16", "10.0.0.0/8"]`, `route: 10.1.0.0/16 and 10.0.0.0/8 overlap (10.1.0.0/16 lies inside 10.0.0.0/8)`},
		{`route = ["default", "10.0.0.0/8"]`, `route: "default" (a full tunnel) already covers 10.0.0.0/8`},
		{`no-route = ["default"]`, `no-route: "default" would exclude everything`},
		{`no-route = ["192.168.5.0/24", "192.168.5.128/25"]`, `no-route: 192.168.5.0/24 and 192.168.5.128/25 overlap`},
		{`no-route = ["192.168.5.1/24"]`, `no-route: "192.168.5.1/24" has host bits set`},
		{`route = ["10.0.0.0/8"]` + "\n" + `no-route = ["192.168.5.0/24"]`, `no-route: 192.168.5.0/24 is not inside any route`},
		{`route = ["10.0.0.0/8"]` + "\n" + `no-route = ["10.0.0.0/8"]`, `no-route: 10.0.0.0/8 excludes all of route 10.0.0.0/8`},
		{`no-route = ["10.77.0.0/16"]`, `no-route: 10.77.0.0/16 overlaps the address pool 10.77.0.0/24`},
		{`listen = "10.77.0.9:443"`, `ipv4-network: 10.77.0.0/24 contains the server's own listen address 10.77.0.9`},
		{`listen = "192.168.77.1:443"` + "\n" + `route = ["192.168.0.0/16"]`,
			`route: 192.168.0.0/16 contains the server's listen address 192.168.77.1: clients would route their connection to the server into the tunnel itself; narrow the route or add "192.168.77.1/32" to no-route`},
		{`udp-listen = "192.168.77.1:443"` + "\n" + `route = ["192.168.77.0/24"]`, `route: 192.168.77.0/24 contains the server's udp-listen address 192.168.77.1`},
	} {
		_, err := LoadConfig(writeConfig(t, tc.body+"\n"), "/state")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: got %v, want error containing %q", tc.body, err, tc.want)
		}
	}
}

// FuzzParseRouteCIDR: whatever the operator types, parsing returns a masked
// prefix or an error, and never panics.
func FuzzParseRouteCIDR(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "192.168.0.0/255.255.0.0", "fd00::/64", "1.2.3.4/0.0.0.255", "/", "default", "fe80::%eth0/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseRouteCIDR(s)
		if err == nil && (!p.IsValid() || p.Masked() != p) {
			t.Fatalf("parseRouteCIDR(%q) = %v without error", s, p)
		}
	})
}

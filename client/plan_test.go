package client

import (
	"bufio"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"kvpn/cstp"
	"kvpn/netcfg"
)

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var (
	testHost   = []netip.Addr{netip.MustParseAddr("192.168.1.23"), netip.MustParseAddr("2001:db8:1::23"), netip.MustParseAddr("127.0.0.1")}
	testServer = netip.MustParseAddr("203.0.113.1")
)

// TestCheckParamsAddresses: tunnel addresses a hostile server could push
// to break the client's own networking are refused; sound ones pass.
func TestCheckParamsAddresses(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name      string
		addr, msk string
		addr6     string
		wantErr   string // "" = accepted
	}{
		{"ok /24", "10.20.0.2", "255.255.255.0", "", ""},
		{"ok /32 without netmask", "10.20.0.2", "", "", ""},
		{"ok with IPv6", "10.20.0.2", "255.255.255.0", "fd00:20::2/64", ""},
		{"ok IPv6 /128", "10.20.0.2", "255.255.255.255", "fd00:20::2/128", ""},
		{"netmask 0.0.0.0", "10.20.0.2", "0.0.0.0", "", "zero netmask"},
		{"non-contiguous netmask", "10.20.0.2", "255.0.255.0", "", "not a netmask"},
		{"unspecified", "0.0.0.0", "255.255.255.0", "", "unspecified"},
		{"this network", "0.1.2.3", "255.255.255.0", "", "reserved"},
		{"loopback", "127.0.0.2", "255.0.0.0", "", "loopback"},
		{"multicast", "224.0.0.1", "255.255.255.0", "", "multicast"},
		{"limited broadcast", "255.255.255.255", "255.255.255.255", "", "broadcast"},
		{"class E", "240.0.0.1", "255.255.255.0", "", "reserved"},
		{"subnet broadcast", "10.20.0.255", "255.255.255.0", "", "broadcast address of 10.20.0.0/24"},
		{"subnet broadcast /30", "10.20.0.3", "255.255.255.252", "", "broadcast address"},
		{"link-local", "169.254.7.7", "255.255.0.0", "", "link-local"},
		{"the client's LAN address", "192.168.1.23", "255.255.255.0", "", "already an address of this host"},
		{"the server's address", "203.0.113.1", "255.255.255.0", "", "the server's own address"},
		{"IPv6 unspecified", "10.20.0.2", "255.255.255.0", "::/128", "unspecified"},
		{"IPv6 loopback", "10.20.0.2", "255.255.255.0", "::1/128", "loopback"},
		{"IPv6 multicast", "10.20.0.2", "255.255.255.0", "ff02::1/128", "multicast"},
		{"IPv6 link-local", "10.20.0.2", "255.255.255.0", "fe80::2/64", "link-local"},
		{"IPv6 zero netmask", "10.20.0.2", "255.255.255.0", "fd00:20::2/0", "zero netmask"},
		{"IPv6 LAN address", "10.20.0.2", "255.255.255.0", "2001:db8:1::23/64", "already an address of this host"},
		{"IPv6 mapped", "10.20.0.2", "255.255.255.0", "::ffff:10.0.0.1/128", "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &cstp.TunnelParams{Address: a(tc.addr), MTU: 1400}
			if tc.msk != "" {
				p.Netmask = a(tc.msk)
			}
			if tc.addr6 != "" {
				p.AddressIP6 = netip.MustParsePrefix(tc.addr6)
			}
			_, _, err := checkParams(p, testHost, testServer)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !errors.Is(err, errUnusableParams) || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("checkParams = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// TestCheckParamsDrops: unusable DNS servers, search domains and routes
// are left out (with a warning each), the rest kept, the input untouched.
func TestCheckParamsDrops(t *testing.T) {
	p := &cstp.TunnelParams{
		Address: netip.MustParseAddr("10.20.0.2"), Netmask: netip.MustParseAddr("255.255.255.0"), MTU: 1400,
		DNS: []netip.Addr{netip.MustParseAddr("10.20.0.53"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("127.0.0.53"),
			netip.MustParseAddr("224.0.0.251"), netip.MustParseAddr("fe80::53"), netip.MustParseAddr("fd00::53"), netip.MustParseAddr("255.255.255.255")},
		DefaultDomain: "corp.example -x,--set-dns=1.1.1.1 eng.example bad_name ~. a..b",
		SplitInclude:  pfxs("10.0.0.0/8", "127.0.0.0/8", "224.0.0.0/24", "169.254.0.0/16", "fe80::/64", "fd00::/8", "0.0.0.0/0"),
		SplitExclude:  pfxs("10.99.0.0/16", "127.0.0.1/32", "ff02::/16"),
	}
	orig := *p
	np, warns, err := checkParams(p, testHost, testServer)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.20.0.53"), netip.MustParseAddr("fd00::53")}; !slices.Equal(np.DNS, want) {
		t.Errorf("DNS %v, want %v", np.DNS, want)
	}
	if np.DefaultDomain != "corp.example eng.example" {
		t.Errorf("domain %q", np.DefaultDomain)
	}
	if want := pfxs("10.0.0.0/8", "fd00::/8", "0.0.0.0/0"); !slices.Equal(np.SplitInclude, want) {
		t.Errorf("split-include %v, want %v", np.SplitInclude, want)
	}
	if want := pfxs("10.99.0.0/16"); !slices.Equal(np.SplitExclude, want) {
		t.Errorf("split-exclude %v, want %v", np.SplitExclude, want)
	}
	if len(warns) != 5+5+4+2 {
		t.Errorf("%d warnings:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	if !slices.Equal(p.DNS, orig.DNS) || p.DefaultDomain != orig.DefaultDomain || !slices.Equal(p.SplitInclude, orig.SplitInclude) {
		t.Error("checkParams changed its input")
	}
}

// TestPlanRoutes: the routes vpnc installs under each route policy,
// including the IPv6 black hole of an IPv4-only full tunnel.
func TestPlanRoutes(t *testing.T) {
	v4 := netip.MustParseAddr("10.20.0.2")
	addr6 := netip.MustParsePrefix("fd00:20::2/128")
	type want struct{ tunnel, excludes, unreachable, refused []netip.Prefix }
	for _, tc := range []struct {
		name    string
		addr6   netip.Prefix
		include []netip.Prefix
		exclude []netip.Prefix
		policy  RoutePolicy
		want    want
	}{
		{"full IPv4 tunnel, no IPv6: IPv6 black-holed", netip.Prefix{}, nil, pfxs("192.168.5.0/24", "2001:db8:5::/48"), RoutePolicy{},
			want{fullTunnel, pfxs("192.168.5.0/24", "2001:db8:5::/48"), blackhole6, nil}},
		{"pushed default route, no IPv6: black-holed", netip.Prefix{}, pfxs("0.0.0.0/0"), nil, RoutePolicy{},
			want{pfxs("0.0.0.0/0"), nil, blackhole6, nil}},
		{"IPv6-only split routes, no IPv6 address: IPv4 is full, IPv6 black-holed", netip.Prefix{}, pfxs("fd00::/8"), nil, RoutePolicy{},
			want{fullTunnel, nil, blackhole6, nil}},
		{"--allow-ipv6-leak", netip.Prefix{}, nil, pfxs("2001:db8:5::/48"), RoutePolicy{AllowIPv6Leak: true},
			want{fullTunnel, nil, nil, nil}},
		{"full tunnel with IPv6", addr6, nil, nil, RoutePolicy{},
			want{append(slices.Clone(fullTunnel), fullTunnel6...), nil, nil, nil}},
		{"split tunnel: no black hole", netip.Prefix{}, pfxs("10.0.0.0/8"), nil, RoutePolicy{},
			want{pfxs("10.0.0.0/8"), nil, nil, nil}},
		{"--no-routes", netip.Prefix{}, pfxs("10.0.0.0/8", "192.168.0.0/16"), pfxs("10.9.0.0/16"), RoutePolicy{NoRoutes: true},
			want{nil, nil, nil, pfxs("10.0.0.0/8", "192.168.0.0/16")}},
		{"--no-routes, full tunnel", netip.Prefix{}, nil, nil, RoutePolicy{NoRoutes: true},
			want{nil, nil, nil, fullTunnel}},
		{"filter: only routes inside", addr6, pfxs("10.1.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "fd00:1::/32", "2001:db8::/32"), pfxs("10.1.9.0/24", "172.16.9.0/24"),
			RoutePolicy{Filter: pfxs("10.0.0.0/8", "fd00::/8")},
			want{pfxs("10.1.0.0/16", "10.0.0.0/8", "fd00:1::/32"), pfxs("10.1.9.0/24"), nil, pfxs("172.16.0.0/12", "2001:db8::/32")}},
		{"filter: a wider pushed route is not inside", netip.Prefix{}, pfxs("10.0.0.0/8"), nil, RoutePolicy{Filter: pfxs("10.1.0.0/16")},
			want{nil, nil, nil, pfxs("10.0.0.0/8")}},
		{"filter: full tunnel refused by a narrow filter, no black hole", netip.Prefix{}, nil, nil, RoutePolicy{Filter: pfxs("10.0.0.0/8")},
			want{nil, nil, nil, fullTunnel}},
		{"filter: 0.0.0.0/0 admits the full tunnel", netip.Prefix{}, nil, nil, RoutePolicy{Filter: pfxs("0.0.0.0/0")},
			want{fullTunnel, nil, blackhole6, nil}},
		{"filter: an IPv4 filter does not admit IPv6", addr6, pfxs("fd00::/8"), nil, RoutePolicy{Filter: pfxs("0.0.0.0/0")},
			want{fullTunnel, nil, nil, pfxs("fd00::/8")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &cstp.TunnelParams{Address: v4, AddressIP6: tc.addr6, SplitInclude: tc.include, SplitExclude: tc.exclude}
			got := planRoutes(p, tc.policy)
			for _, c := range []struct {
				what      string
				got, want []netip.Prefix
			}{{"tunnel", got.tunnel, tc.want.tunnel}, {"excludes", got.excludes, tc.want.excludes},
				{"unreachable", got.unreachable, tc.want.unreachable}, {"refused", got.refused, tc.want.refused}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestParseRouteFilter(t *testing.T) {
	got, err := ParseRouteFilter("10.0.0.0/8, fd00::/8,default")
	if want := pfxs("10.0.0.0/8", "fd00::/8", "0.0.0.0/0", "::/0"); err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseRouteFilter = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", "10.0.0.1/8", "10.0.0.0", "10.0.0.0/8,", "x"} {
		if _, err := ParseRouteFilter(bad); err == nil {
			t.Errorf("ParseRouteFilter(%q) accepted", bad)
		}
	}
}

func TestPlanDescribe(t *testing.T) {
	for _, tc := range []struct {
		plan routePlan
		want string
	}{
		{routePlan{tunnel: fullTunnel, excludes: pfxs("198.51.100.0/24"), unreachable: blackhole6}, "0.0.0.0/0 (full tunnel) except 198.51.100.0/24, IPv6 blocked"},
		{routePlan{tunnel: append(pfxs("10.0.0.0/8"), fullTunnel6...)}, "10.0.0.0/8 + ::/0 (full tunnel)"},
		{routePlan{refused: fullTunnel}, "none"},
	} {
		if got := tc.plan.describe(); got != tc.want {
			t.Errorf("describe = %q, want %q", got, tc.want)
		}
	}
}

// FuzzPushedConfig: any CONNECT answer a server can send, through the
// header parser, checkParams and planRoutes under each route policy, never
// panics, and every item of the resulting plan passes the checks.
func FuzzPushedConfig(f *testing.F) {
	for _, s := range []string{
		"X-CSTP-Address: 10.20.0.2\r\nX-CSTP-Netmask: 255.255.255.0\r\nX-CSTP-MTU: 1400\r\nX-CSTP-DNS: 10.20.0.53\r\nX-CSTP-Default-Domain: corp.example\r\nX-CSTP-Split-Include: 10.0.0.0/255.0.0.0\r\nX-CSTP-Split-Exclude: 10.9.0.0/255.255.0.0",
		"X-CSTP-Address: 10.20.0.2\r\nX-CSTP-Netmask: 0.0.0.0\r\nX-CSTP-MTU: 1400",
		"X-CSTP-Address: 192.168.1.23\r\nX-CSTP-MTU: 1400\r\nX-CSTP-Address-IP6: fe80::1/64",
		"X-CSTP-Address: 10.20.0.2\r\nX-CSTP-MTU: 1400\r\nX-CSTP-Address-IP6: fd00::2/64\r\nX-CSTP-Split-Include-IP6: fd00:1::/32\r\nX-CSTP-DNS-IP6: fd00::53",
		"X-CSTP-Address: 10.20.0.2\r\nX-CSTP-MTU: 1400\r\nX-CSTP-DNS: 127.0.0.1\r\nX-CSTP-Default-Domain: -x corp.example,a_b\r\nX-CSTP-Split-Include: 127.0.0.0/255.0.0.0",
		"X-CSTP-Address: 10.20.0.2\r\nX-CSTP-MTU: 1400\r\nX-CSTP-Split-Include: 0.0.0.0/0.0.0.0\r\nX-CSTP-Split-Exclude: fd00::/8",
	} {
		f.Add(s)
	}
	policies := []RoutePolicy{{}, {NoRoutes: true}, {AllowIPv6Leak: true}, {Filter: pfxs("10.0.0.0/8", "fd00::/8")}, {Filter: pfxs("0.0.0.0/0")}}
	f.Fuzz(func(t *testing.T, headers string) {
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n"+headers+"\r\n\r\n")), &http.Request{Method: http.MethodConnect})
		if err != nil {
			return
		}
		p, err := cstp.ParseTunnelParams(resp.Header)
		if err != nil {
			return
		}
		np, _, err := checkParams(p, testHost, testServer)
		if err != nil {
			if !errors.Is(err, errUnusableParams) {
				t.Fatalf("checkParams error without errUnusableParams: %v", err)
			}
			return
		}
		if err := checkTunnelAddr(netip.PrefixFrom(np.Address, maskPrefixLen(np.Netmask)), testHost, testServer); err != nil {
			t.Fatalf("accepted address: %v", err)
		}
		if np.AddressIP6.IsValid() {
			if err := checkTunnelAddr(np.AddressIP6, testHost, testServer); err != nil {
				t.Fatalf("accepted IPv6 address: %v", err)
			}
		}
		for _, s := range np.DNS {
			if why := usableAddr(s); why != "" {
				t.Fatalf("kept DNS server %s: %s", s, why)
			}
		}
		for _, d := range netcfg.SplitDomains(np.DefaultDomain) {
			if !netcfg.ValidDomainName(d) || strings.HasPrefix(d, "-") {
				t.Fatalf("kept domain %q", d)
			}
		}
		for _, pol := range policies {
			plan := planRoutes(np, pol)
			for _, r := range append(append(slices.Clone(plan.tunnel), plan.excludes...), plan.unreachable...) {
				if why := usableRoute(r); why != "" && !slices.Contains(fullTunnel6, r) {
					t.Fatalf("plan route %s: %s", r, why)
				}
			}
			for _, r := range append(slices.Clone(plan.tunnel), plan.excludes...) {
				if !pol.allows(r) {
					t.Fatalf("policy %+v: installed %s", pol, r)
				}
				if r.Addr().Is6() && !np.AddressIP6.IsValid() && slices.Contains(plan.tunnel, r) {
					t.Fatalf("IPv6 route %s into a tunnel without IPv6", r)
				}
			}
			if len(plan.unreachable) > 0 && (np.AddressIP6.IsValid() || pol.AllowIPv6Leak || pol.NoRoutes) {
				t.Fatalf("black hole with IPv6 %v, policy %+v", np.AddressIP6, pol)
			}
			_ = plan.describe()
		}
	})
}

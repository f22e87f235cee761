package client

import (
	"net/netip"
	"slices"
	"testing"
)

func TestIPv6Routes(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	addr6 := netip.MustParsePrefix("fd00:77::2/128")
	for _, tc := range []struct {
		name    string
		addr6   netip.Prefix
		include []netip.Prefix
		want    []netip.Prefix
	}{
		{"no IPv6 address", netip.Prefix{}, pfx("fd00:99::/64"), nil},
		{"full tunnel", addr6, nil, pfx("::/1", "8000::/1")},
		{"IPv4 split only: IPv6 stays full", addr6, pfx("10.1.0.0/16"), pfx("::/1", "8000::/1")},
		{"IPv6 split", addr6, pfx("10.1.0.0/16", "fd00:99::/64", "fd00:77::/64"), pfx("fd00:99::/64", "fd00:77::/64")},
	} {
		if got := ipv6Routes(tc.addr6, tc.include); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

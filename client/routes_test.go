package client

import (
	"net/netip"
	"testing"
)

// TestCapturingRoute: the decision behind refusing a pushed route when the
// server's host route cannot be pinned.
func TestCapturingRoute(t *testing.T) {
	p := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	server := netip.MustParseAddr("203.0.113.1")
	for _, tc := range []struct {
		routes, excludes []netip.Prefix
		want             string
	}{
		{fullTunnel, nil, "128.0.0.0/1"},
		{p("10.0.0.0/8", "203.0.113.0/24"), nil, "203.0.113.0/24"},
		{p("10.0.0.0/8"), nil, ""},
		{fullTunnel, p("203.0.113.0/28"), ""},
		{p("203.0.0.0/8"), p("203.0.113.1/32"), ""},
		{p("203.0.0.0/8"), p("203.0.114.0/24"), "203.0.0.0/8"},
	} {
		r, ok := capturingRoute(tc.routes, tc.excludes, server)
		got := ""
		if ok {
			got = r.String()
		}
		if got != tc.want {
			t.Errorf("capturingRoute(%v, %v) = %q, want %q", tc.routes, tc.excludes, got, tc.want)
		}
	}
}

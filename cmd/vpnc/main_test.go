//go:build linux

package main

import (
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// withStdin makes os.Stdin hold s (for --passwd-on-stdin).
func withStdin(t *testing.T, s string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.WriteString(s); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = old; r.Close() })
}

func TestParseConnectRouteFlags(t *testing.T) {
	base := []string{"-u", "alice", "--passwd-on-stdin", "--state-dir", t.TempDir()}
	withStdin(t, "pw\n")
	o, err := parseConnect(append(base, "--no-dns", "--allow-ipv6-leak", "--route-filter", "10.0.0.0/8,fd00::/8", "vpn.example"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	if !o.NoDNS || !o.Routes.AllowIPv6Leak || o.Routes.NoRoutes || !slices.Equal(o.Routes.Filter, want) {
		t.Errorf("options: NoDNS %v, Routes %+v", o.NoDNS, o.Routes)
	}
	withStdin(t, "pw\n")
	if o, err := parseConnect(append(base, "--no-routes", "vpn.example"), io.Discard); err != nil || !o.Routes.NoRoutes {
		t.Errorf("--no-routes: %v", err)
	}
	for _, bad := range [][]string{{"--route-filter", "10.0.0.1/8"}, {"--no-routes", "--route-filter", "10.0.0.0/8"}} {
		withStdin(t, "pw\n")
		if _, err := parseConnect(append(append(slices.Clone(base), bad...), "vpn.example"), io.Discard); err == nil || !strings.Contains(err.Error(), "route-filter") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

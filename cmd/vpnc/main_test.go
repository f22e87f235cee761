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

// TestParseConnectCertificate: -c/-k as openconnect's; with a
// certificate no -u is needed and the password is asked only if the
// server wants one.
func TestParseConnectCertificate(t *testing.T) {
	dir := t.TempDir()
	o, err := parseConnect([]string{"-c", "/x/c.pem", "-k", "/x/k.pem", "--state-dir", dir, "vpn.example"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.CertFile != "/x/c.pem" || o.KeyFile != "/x/k.pem" || o.User != "" || o.Password != "" || o.AskPassword == nil {
		t.Errorf("options: cert %q key %q user %q password set %v ask %v", o.CertFile, o.KeyFile, o.User, o.Password != "", o.AskPassword != nil)
	}
	withStdin(t, "pw\n")
	o, err = parseConnect([]string{"--certificate", "/x/c.pem", "--sslkey", "/x/k.pem", "--passwd-on-stdin", "--state-dir", dir, "vpn.example"}, io.Discard)
	if err != nil || o.Password != "pw" || o.CertFile != "/x/c.pem" {
		t.Errorf("long flags with --passwd-on-stdin: %v", err)
	}
	if _, err := parseConnect([]string{"-k", "/x/k.pem", "-u", "alice", "--state-dir", dir, "vpn.example"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--sslkey") {
		t.Errorf("-k without -c: %v", err)
	}
	if _, err := parseConnect([]string{"--state-dir", dir, "vpn.example"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Errorf("neither -u nor -c: %v", err)
	}
}

// TestParseConnectOTPOnStdin: with --passwd-on-stdin the password is the
// first line and a one-time password the server asks for the second;
// --authgroup is passed on.
func TestParseConnectOTPOnStdin(t *testing.T) {
	withStdin(t, "pw\n123456\n")
	o, err := parseConnect([]string{"-u", "alice", "--passwd-on-stdin", "--authgroup", "eng", "--state-dir", t.TempDir(), "vpn.example"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Password != "pw" || o.AuthGroup != "eng" {
		t.Fatalf("password %q group %q", o.Password, o.AuthGroup)
	}
	code, err := o.AskSecondary("OTP:")
	if err != nil || code != "123456" {
		t.Fatalf("one-time password %q, %v", code, err)
	}
	if _, err := o.AskSecondary("OTP:"); err == nil {
		t.Fatal("a third line read from a two-line stdin")
	}
}

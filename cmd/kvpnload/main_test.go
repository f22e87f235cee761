//go:build linux

package main

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	o, err := parse([]string{"--user-format", "user%d", "--password-file", pw, "--sessions", "10000", "--parallel", "32",
		"--rate", "200", "--duration", "90", "--churn", "30s,2m", "--local-addr", "127.0.0.2", "--pps", "5", "--size", "500",
		"--json", "out.json", "--quiet", "https://vpn.example:8443"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Password != "secret" || c.UserFormat != "user%d" || c.Sessions != 10000 || c.Parallel != 32 || c.Rate != 200 ||
		c.Duration != 90*time.Second || c.ChurnMin != 30*time.Second || c.ChurnMax != 2*time.Minute ||
		c.LocalAddr != netip.MustParseAddr("127.0.0.2") || c.PPS != 5 || c.Size != 500 || o.json != "out.json" ||
		!o.quiet || c.Progress != nil || c.Server.Host != "vpn.example:8443" {
		t.Fatalf("parsed %+v", c)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"-u", "a"},
		{"-u", "a", "--user-format", "u%d", "h"},
		{"-u", "a", "--churn", "10s", "h"},
		{"-u", "a", "--churn", "20s,10s", "h"},
		{"-u", "a", "--duration", "-1", "h"},
		{"-u", "a", "--sessions", "0", "h"},
		{"-u", "a", "--local-addr", "nope", "h"},
	} {
		if _, err := parse(args, io.Discard); err == nil {
			t.Errorf("%s: accepted", strings.Join(args, " "))
		}
	}
}

func TestFileLimit(t *testing.T) {
	// 10,000 sessions need a TCP and a UDP socket each: more than 20,000.
	if n := fileLimit(10000); n < 20000+fdReserve {
		t.Fatalf("fileLimit(10000) = %d", n)
	}
}

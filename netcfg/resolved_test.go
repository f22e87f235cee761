package netcfg_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kvpn/netcfg"
)

// fakeResolvectl puts a script named resolvectl first on PATH that appends
// its arguments, one call per line, to the returned log file, and fails
// (exit 1) when its arguments start with failOn. These tests check the
// exact resolvectl calls kvpn makes, not systemd-resolved itself (which
// CI machines do not run).
func fakeResolvectl(t *testing.T, failOn string) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
	if failOn != "" {
		script += "case \"$*\" in \"" + failOn + "\"*) echo 'Failed to set' >&2; exit 1;; esac\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "resolvectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return log
}

func calls(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func TestSetResolved(t *testing.T) {
	for _, tc := range []struct {
		name, domain string
		full         bool
		want         string
	}{
		{"full tunnel", "corp.example", true,
			"-- dns kvpnc0 10.0.0.53 fd00::53\n-- domain kvpnc0 corp.example ~.\n-- default-route kvpnc0 true\n"},
		{"full tunnel without domain", "", true,
			"-- dns kvpnc0 10.0.0.53 fd00::53\n-- domain kvpnc0 ~.\n-- default-route kvpnc0 true\n"},
		{"split with domains", "corp.example, eng.example", false,
			"-- dns kvpnc0 10.0.0.53 fd00::53\n-- domain kvpnc0 corp.example eng.example\n-- default-route kvpnc0 false\n"},
		{"split without domain", "", false,
			"-- dns kvpnc0 10.0.0.53 fd00::53\n-- default-route kvpnc0 true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := fakeResolvectl(t, "")
			c := netcfg.New()
			if err := c.SetResolved("kvpnc0", servers, tc.domain, tc.full); err != nil {
				t.Fatal(err)
			}
			if got := calls(t, log); got != tc.want {
				t.Errorf("resolvectl calls:\n%s\nwant:\n%s", got, tc.want)
			}
			if err := c.Restore(); err != nil {
				t.Fatal(err)
			}
			if got := calls(t, log); got != tc.want+"-- revert kvpnc0\n" {
				t.Errorf("after Restore:\n%s", got)
			}
		})
	}
}

// A failing step reverts the link at once and leaves nothing to undo.
func TestSetResolvedFailureReverts(t *testing.T) {
	log := fakeResolvectl(t, "-- domain")
	c := netcfg.New()
	err := c.SetResolved("kvpnc0", servers, "corp.example", true)
	if err == nil || !strings.Contains(err.Error(), "resolvectl -- domain kvpnc0 corp.example ~.") || !strings.Contains(err.Error(), "Failed to set") {
		t.Fatalf("SetResolved = %v", err)
	}
	want := "-- dns kvpnc0 10.0.0.53 fd00::53\n-- domain kvpnc0 corp.example ~.\n-- revert kvpnc0\n"
	if got := calls(t, log); got != want {
		t.Errorf("resolvectl calls:\n%s\nwant:\n%s", got, want)
	}
	if err := c.Restore(); err != nil || calls(t, log) != want {
		t.Errorf("Restore after a failed SetResolved: %v\n%s", err, calls(t, log))
	}
}

func TestSetResolvedRejectsBadInput(t *testing.T) {
	log := fakeResolvectl(t, "")
	c := netcfg.New()
	if err := c.SetResolved("kvpnc0", servers, "corp.example ~.", false); err == nil {
		t.Error("accepted a routing domain from the server")
	}
	if err := c.SetResolved("kvpnc0", nil, "corp.example", false); err != nil {
		t.Errorf("no servers: %v", err)
	}
	if got := calls(t, log); got != "" {
		t.Errorf("resolvectl called: %s", got)
	}
}

// TestSetResolvedDashDomain: a pushed domain that starts with "-" must not
// reach resolvectl, where it would be parsed as an option; and every call
// ends option parsing with "--" before its operands.
func TestSetResolvedDashDomain(t *testing.T) {
	log := fakeResolvectl(t, "")
	c := netcfg.New()
	for _, d := range []string{"-h", "--set-dns=1.2.3.4", "corp.example -x", "-corp.example"} {
		if err := c.SetResolved("kvpnc0", servers, d, false); err == nil {
			t.Errorf("SetResolved accepted the domain %q", d)
		}
	}
	if got := calls(t, log); got != "" {
		t.Errorf("resolvectl called:\n%s", got)
	}
	if err := c.SetResolved("-kvpnc0", servers, "corp.example", false); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(calls(t, log)), "\n") {
		if !strings.HasPrefix(line, "-- ") {
			t.Errorf("resolvectl called without \"--\" before its operands: %q", line)
		}
	}
	c.Restore()
}

func TestValidDomainName(t *testing.T) {
	for d, want := range map[string]bool{
		"corp.example": true, "corp.example.": true, "a": true, "x-1.b2.example": true,
		strings.Repeat("a", 63) + ".example": true,
		"":                                   false, ".": false, "-corp.example": false, "corp-.example": false, "corp..example": false,
		".corp.example": false, "corp_example": false, "corp.example\nnameserver 1.2.3.4": false,
		"~.": false, "corp example": false, strings.Repeat("a", 64) + ".example": false,
		strings.Repeat("abcdefghi.", 25) + "abcd": false, // 254 bytes
		"bücher.example":                          false,
	} {
		if got := netcfg.ValidDomainName(d); got != want {
			t.Errorf("ValidDomainName(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestDetectDNSBackend(t *testing.T) {
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub-resolv.conf")
	os.WriteFile(stub, []byte("# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"), 0o644)
	plain := filepath.Join(dir, "resolv.conf")
	os.WriteFile(plain, []byte("nameserver 192.168.1.1\n"), 0o644)

	t.Setenv("PATH", t.TempDir()) // no resolvectl
	if got := netcfg.DetectDNSBackend(stub); got != netcfg.DNSResolvConf {
		t.Errorf("stub without resolvectl: %s", got)
	}
	fakeResolvectl(t, "")
	for file, want := range map[string]netcfg.DNSBackend{
		stub:                         netcfg.DNSResolved,
		plain:                        netcfg.DNSResolvConf,
		filepath.Join(dir, "absent"): netcfg.DNSResolvConf,
	} {
		if got := netcfg.DetectDNSBackend(file); got != want {
			t.Errorf("DetectDNSBackend(%s) = %s, want %s", filepath.Base(file), got, want)
		}
	}
	for _, s := range []string{"auto", "resolvconf", "resolved", "none"} {
		if b, err := netcfg.ParseDNSBackend(s); err != nil || string(b) != s {
			t.Errorf("ParseDNSBackend(%q) = %v, %v", s, b, err)
		}
	}
	if _, err := netcfg.ParseDNSBackend("dnsmasq"); err == nil || !strings.Contains(err.Error(), `"dnsmasq"`) {
		t.Errorf("ParseDNSBackend(dnsmasq) = %v", err)
	}
}

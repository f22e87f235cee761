package netcfg_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kvpn/netcfg"
)

// FuzzPushedDomain: whatever X-CSTP-Default-Domain a server sends, SetDNS
// either refuses it or writes one search line of valid names (no line
// injected into resolv.conf, no name that starts with "-"), and Restore
// puts the file back.
func FuzzPushedDomain(f *testing.F) {
	for _, s := range []string{"corp.example", "corp.example, eng.example", "-h", "a\nnameserver 1.2.3.4", "x..y", "~.", strings.Repeat("a.", 130)} {
		f.Add(s)
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	orig := []byte("nameserver 192.168.1.1\nsearch home.example\n")
	servers := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	f.Fuzz(func(t *testing.T, domain string) {
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		c := netcfg.New()
		err := c.SetDNS(path, servers, domain, filepath.Join(dir, "backup"))
		for _, d := range netcfg.SplitDomains(domain) {
			if !netcfg.ValidDomainName(d) && err == nil {
				t.Fatalf("SetDNS accepted %q", d)
			}
		}
		if err != nil {
			return
		}
		got, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
		if len(lines) > 4 {
			t.Fatalf("%d lines:\n%s", len(lines), got)
		}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) > 0 && f[0] == "search" {
				for _, d := range f[1:] {
					if !netcfg.ValidDomainName(d) || strings.HasPrefix(d, "-") {
						t.Fatalf("search line has %q", d)
					}
				}
			}
		}
		if err := c.Restore(); err != nil {
			t.Fatal(err)
		}
		if back, _ := os.ReadFile(path); string(back) != string(orig) {
			t.Fatalf("not restored:\n%s", back)
		}
	})
}

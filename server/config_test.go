package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vpnd.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaultsAndOverrides(t *testing.T) {
	p := writeConfig(t, `listen = "127.0.0.1:8443"
route = ["192.168.10.0/24"]
dns = ["192.168.10.53"]
mtu = 1400
`)
	cfg, err := LoadConfig(p, "/state")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8443" || cfg.MTU != 1400 || len(cfg.routes) != 1 || len(cfg.dns) != 1 {
		t.Fatalf("overrides not applied: %+v", cfg)
	}
	if cfg.IPv4Network != DefaultIPv4Network || cfg.PasswdFile != "/state/passwd" || cfg.DPD != DefaultDPD {
		t.Fatalf("defaults lost: %+v", cfg)
	}
}

// TestLoadConfigErrors: every broken file gets an error naming the problem
// (and the line, where the decoder knows it).
func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"listen = \"0.0.0.0:443\"\nlistn = \"x\"\n", `:2: unknown key "listn"`},
		{"mtu = \"big\"\n", `line 1 (last key "mtu")`},
		{"mtu = 20\n", "mtu: 20 is out of range"},
		{"ipv4-network = \"10.0.0.1/24\"\n", "host bits set"},
		{"ipv4-network = \"fd00::/64\"\n", "not an IPv4 network"},
		{"route = [\"10.0.0.0/33\"]\n", "route:"},
		{"dns = [\"resolver\"]\n", "dns:"},
		{"tun-backend = \"fast\"\n", "tun-backend:"},
		{"device = \"a/b\"\n", "device:"},
		{"[section\n", "to end table name"},
		{"log-level = \"chatty\"\n", "log-level:"},
	} {
		_, err := LoadConfig(writeConfig(t, tc.body), "/state")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: got %v, want error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestTunnelMTU(t *testing.T) {
	for _, tc := range []struct{ cfg, base, want int }{
		{1434, 1500, 1434}, {1434, 0, 1434}, {1434, 65535, 1434}, {1434, 1400, 1334}, {1434, 100, 576},
	} {
		if got := tunnelMTU(tc.cfg, tc.base); got != tc.want {
			t.Errorf("tunnelMTU(%d, %d) = %d, want %d", tc.cfg, tc.base, got, tc.want)
		}
	}
}

package radius

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestConfigParse(t *testing.T) {
	dir := t.TempDir()
	sf := filepath.Join(dir, "secret")
	os.WriteFile(sf, []byte("x\n"), 0o600)
	var keys []string
	bad := func(k, f string, a ...any) { keys = append(keys, k) }
	p := (&Config{Server: []string{"10.0.0.1", "[2001:db8::1]:1645", "2001:db8::2"}, SecretFile: sf}).Parse("node1", bad)
	if p == nil || p.Auth[0] != "10.0.0.1:1812" || p.Auth[1] != "[2001:db8::1]:1645" || p.Auth[2] != "[2001:db8::2]:1812" ||
		p.Acct[0] != "10.0.0.1:1813" || p.Acct[1] != "[2001:db8::1]:1813" || p.NASIdentifier != "node1" || !p.Accounting ||
		p.Timeout != DefaultTimeout*time.Second || p.Retries != 0 {
		t.Fatalf("%+v %v", p, keys)
	}
	keys = nil
	if p := (&Config{Server: []string{"h:99999"}, SecretFile: filepath.Join(dir, "none"), Timeout: -1}).Parse("", bad); p != nil {
		t.Fatal("bad config accepted")
	}
	if len(keys) != 3 {
		t.Fatalf("errors for %v", keys)
	}
}

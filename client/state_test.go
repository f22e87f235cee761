package client

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstanceLock: two instances on the same interface share a state
// directory and must not both run (the second would recover, that is undo,
// the first's live routes and DNS): the second is refused. Instances on
// different interfaces have separate state and both run. A released lock
// (the holder ended, or died) can be taken again.
func TestInstanceLock(t *testing.T) {
	state := t.TempDir()
	opts := func(ifname string) *Options {
		return &Options{Interface: ifname, StateDir: state, Log: slog.New(slog.DiscardHandler)}
	}
	unlock1, err := opts("kvpnc0").lockInstance()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opts("kvpnc0").lockInstance(); err == nil || !strings.Contains(err.Error(), "another vpnc is running on interface kvpnc0") {
		t.Fatalf("second instance on kvpnc0: %v", err)
	}
	unlock2, err := opts("kvpnc1").lockInstance()
	if err != nil {
		t.Fatalf("instance on kvpnc1 beside one on kvpnc0: %v", err)
	}
	if a, b := opts("kvpnc0").routeJournal(), opts("kvpnc1").routeJournal(); a == b || filepath.Dir(a) != filepath.Join(state, "kvpnc0") {
		t.Errorf("route journals %s and %s", a, b)
	}
	if a, b := opts("kvpnc0").dnsBackup(), opts("kvpnc1").dnsBackup(); a == b || filepath.Dir(b) != filepath.Join(state, "kvpnc1") {
		t.Errorf("DNS backups %s and %s", a, b)
	}
	unlock1()
	unlock3, err := opts("kvpnc0").lockInstance()
	if err != nil {
		t.Fatalf("kvpnc0 after the first instance ended: %v", err)
	}
	unlock3()
	unlock2()
	for _, bad := range []string{"../x", "a/b", ".."} {
		if _, err := opts(bad).lockInstance(); err == nil {
			t.Errorf("interface %q accepted", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(state), "x")); err == nil {
		t.Error("a state directory was made outside the state directory")
	}
}

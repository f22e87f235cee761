package certs

import (
	"path/filepath"
	"testing"
)

func TestLoadOrCreateKeepsIdentity(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	c1, created, err := LoadOrCreate(cp, kp, "vpn.test")
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	c2, created, err := LoadOrCreate(cp, kp, "vpn.test")
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	p1, p2 := Pin(c1.Leaf), Pin(c2.Leaf)
	if p1 != p2 {
		t.Fatalf("pin changed across restart: %s vs %s", p1, p2)
	}
	sum, err := ParsePin(p1)
	if err != nil || len(sum) != 32 {
		t.Fatalf("ParsePin(%s) = %x, %v", p1, sum, err)
	}
}

func TestParsePinRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "sha256:abc", "pin-sha256:!!!", "pin-sha256:AAAA"} {
		if _, err := ParsePin(s); err == nil {
			t.Errorf("ParsePin(%q) accepted", s)
		}
	}
}

func TestLoadMissingOneFile(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if _, _, err := LoadOrCreate(cp, kp, "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(cp, filepath.Join(dir, "missing.pem"), "x"); err == nil {
		t.Fatal("a missing key next to an existing certificate must be an error, not a new identity")
	}
}

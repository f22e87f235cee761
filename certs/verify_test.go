package certs

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerCheck: a pinned certificate passes only with its own pin; a
// self-signed one passes the chain check only when it is the CA given
// (and the name matches), and a refusal names the pin to pass.
func TestServerCheck(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert, _, err := LoadOrCreate(certPath, keyPath, "vpn.example")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreate(filepath.Join(dir, "o.pem"), filepath.Join(dir, "o.key"), "vpn.example")
	if err != nil {
		t.Fatal(err)
	}
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	pin := Pin(cert.Leaf)
	for _, c := range []struct {
		pin, ca, name string
		ok            bool
	}{
		{pin, "", "vpn.example", true},
		{Pin(other.Leaf), "", "vpn.example", false},
		{"", certPath, "vpn.example", true},
		{"", certPath, "elsewhere.example", false},
		{"", "", "vpn.example", false}, // not in the system roots
	} {
		check, err := ServerCheck(c.pin, c.ca, c.name)
		if err != nil {
			t.Fatal(err)
		}
		err = check(cs)
		if (err == nil) != c.ok {
			t.Errorf("pin %q ca %q name %q: %v, want ok=%v", c.pin, c.ca, c.name, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), pin) {
			t.Errorf("refusal %q does not name the server's pin", err)
		}
	}
	if _, err := ServerCheck("sha256:nonsense", "", "x"); err == nil {
		t.Error("a malformed pin was accepted")
	}
	if _, err := ServerCheck("", filepath.Join(dir, "missing.pem"), "x"); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

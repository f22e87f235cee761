package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"
)

// TestSelfSigned: the name goes to the SAN of its kind, the certificate
// verifies as a server certificate for it, an RSA key may encipher, and
// WritePEM writes what Load reads back with the same pin.
func TestSelfSigned(t *testing.T) {
	for _, c := range []struct {
		host string
		rsa  bool
	}{{"10.9.0.1", false}, {"vpn.example", false}, {"vpn.example", true}} {
		var key crypto.Signer // nil: SelfSigned makes an ECDSA key
		if c.rsa {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			key = k
		}
		cert, err := SelfSigned(c.host, time.Hour, key)
		if err != nil {
			t.Fatal(err)
		}
		leaf := cert.Leaf
		if err := leaf.VerifyHostname(c.host); err != nil {
			t.Errorf("%s: %v", c.host, err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: c.host}); err != nil {
			t.Errorf("%s: does not verify against itself: %v", c.host, err)
		}
		if got := leaf.KeyUsage&x509.KeyUsageKeyEncipherment != 0; got != c.rsa {
			t.Errorf("%s (RSA %v): key encipherment %v", c.host, c.rsa, got)
		}
		if d := time.Until(leaf.NotAfter); d > time.Hour || d < 59*time.Minute {
			t.Errorf("%s: valid for %s more, want about an hour", c.host, d)
		}
		dir := t.TempDir()
		cp, kp := filepath.Join(dir, "a", "cert.pem"), filepath.Join(dir, "b", "key.pem")
		if err := WritePEM(cert, cp, kp); err != nil {
			t.Fatal(err)
		}
		back, err := Load(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		if Pin(back.Leaf) != Pin(leaf) {
			t.Errorf("%s: pin changed through WritePEM/Load", c.host)
		}
	}
}

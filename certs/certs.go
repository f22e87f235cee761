// Package certs creates, loads and pins the server's TLS certificate, and
// verifies client certificates and maps them to user names (client.go);
// ca.go mints a CA, client certificates and CRLs for tests and demos.
//
// A pin is OpenConnect's "pin-sha256:" form: base64 of the SHA-256 of the
// certificate's SubjectPublicKeyInfo, so it survives a certificate renewal
// that keeps the key.
package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// PinPrefix starts every pin, as openconnect's --servercert expects.
const PinPrefix = "pin-sha256:"

// Pin returns the pin of cert.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return PinPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

// ParsePin checks that s is a well-formed pin and returns the raw digest.
func ParsePin(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, PinPrefix)
	if !ok {
		return nil, fmt.Errorf("certificate pin %q must start with %q", s, PinPrefix)
	}
	sum, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("certificate pin %q: want base64 of a 32-byte SHA-256 digest", s)
	}
	return sum, nil
}

// LoadOrCreate loads the key pair at certPath and keyPath. If neither file
// exists it first creates a self-signed ECDSA P-256 certificate for
// hostname, valid ten years, so a server on built-in defaults keeps one
// identity (and one pin) across restarts.
func LoadOrCreate(certPath, keyPath, hostname string) (tls.Certificate, bool, error) {
	_, errC := os.Stat(certPath)
	_, errK := os.Stat(keyPath)
	created := false
	if errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist) {
		if err := create(certPath, keyPath, hostname); err != nil {
			return tls.Certificate{}, false, err
		}
		created = true
	}
	c, err := Load(certPath, keyPath)
	return c, created, err
}

// Load reads a PEM certificate chain and key.
func Load(certPath, keyPath string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return c, fmt.Errorf("loading certificate %s / key %s: %w", certPath, keyPath, err)
	}
	c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return c, fmt.Errorf("parsing certificate %s: %w", certPath, err)
	}
	return c, nil
}

func create(certPath, keyPath, hostname string) error {
	c, err := SelfSigned(hostname, 10*365*24*time.Hour, nil)
	if err != nil {
		return err
	}
	return WritePEM(c, certPath, keyPath)
}

// ParseLeaf returns the first certificate of a PEM file's contents.
func ParseLeaf(pemData []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

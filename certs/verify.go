package certs

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ServerCheck returns the tls.Config.VerifyConnection of an OpenConnect
// client (vpnc, kvpnload): with pin (--servercert pin-sha256:...) the
// server's leaf must have that pin; otherwise its chain must verify for
// name against the CA certificates in caFile, or the system roots when
// caFile is "". A refusal names the pin to pass, as openconnect does.
func ServerCheck(pin, caFile, name string) (func(tls.ConnectionState) error, error) {
	var want []byte
	if pin != "" {
		p, err := ParsePin(pin)
		if err != nil {
			return nil, err
		}
		want = p
	}
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	return func(cs tls.ConnectionState) error {
		leaf := cs.PeerCertificates[0]
		got := Pin(leaf)
		if want != nil {
			have, _ := ParsePin(got)
			if subtle.ConstantTimeCompare(have, want) != 1 {
				return fmt.Errorf("server certificate %s does not match --servercert %s", got, pin)
			}
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			return fmt.Errorf("server certificate not trusted (%v); to trust this server, pass --servercert %s", err, got)
		}
		return nil
	}, nil
}

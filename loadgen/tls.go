package loadgen

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"kvpn/certs"
	"kvpn/record"
)

// tlsConfig checks the server as vpnc does (client/dial.go): a pinned
// certificate, else a chain to --cafile or the system roots.
func (c *Config) tlsConfig() (*tls.Config, error) {
	cfg := record.BaseConfig()
	cfg.ServerName = c.Server.Hostname()
	cfg.InsecureSkipVerify = true // checked below, always
	// One handshake per session, each a new user: a session cache would
	// only hold memory.
	var pin []byte
	if c.ServerCert != "" {
		p, err := certs.ParsePin(c.ServerCert)
		if err != nil {
			return nil, err
		}
		pin = p
	}
	var roots *x509.CertPool
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", c.CAFile)
		}
	}
	name := cfg.ServerName
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf := cs.PeerCertificates[0]
		got := certs.Pin(leaf)
		if pin != nil {
			want, _ := certs.ParsePin(got)
			if subtle.ConstantTimeCompare(want, pin) != 1 {
				return fmt.Errorf("server certificate %s does not match --servercert %s", got, c.ServerCert)
			}
			return nil
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			return fmt.Errorf("server certificate not trusted (%v); pass --servercert %s", err, got)
		}
		return nil
	}
	return cfg, nil
}

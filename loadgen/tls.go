package loadgen

import (
	"crypto/tls"

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
	check, err := certs.ServerCheck(c.ServerCert, c.CAFile, cfg.ServerName)
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = check
	return cfg, nil
}

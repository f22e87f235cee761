package server

import (
	"fmt"

	"kvpn/certs"
)

// The auth key of the configuration: which login methods a server asks
// for, and the checks that they fit together.

// AuthMethods is the auth key: one method name or a list of them.
type AuthMethods []string

// UnmarshalTOML accepts a string or an array of strings.
func (a *AuthMethods) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*a = AuthMethods{v}
	case []any:
		out := make(AuthMethods, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("auth: want a method name or a list of them, got %T in the list", e)
			}
			out = append(out, s)
		}
		*a = out
	default:
		return fmt.Errorf("auth: want a method name or a list of them, got %T", v)
	}
	return nil
}

// Authentication methods (the auth key's values).
const (
	AuthPlain       = "plain"
	AuthCertificate = "certificate"
	AuthRadius      = "radius" // the password is checked by RADIUS servers
)

// certAuth reports whether logins need a client certificate.
func (c *Config) certAuth() bool { return c.authCert }

// passwordAuth reports whether logins need a password from the password
// file (the default; not with auth = "radius").
func (c *Config) passwordAuth() bool { return c.authPlain || (!c.authCert && !c.authRadius) }

// askPassword reports whether the login form asks for a password: for the
// password file or for RADIUS.
func (c *Config) askPassword() bool { return c.passwordAuth() || c.authRadius }

// UsesPasswdFile reports whether logins check the password file.
func (c *Config) UsesPasswdFile() bool { return c.passwordAuth() }

// validateAuth checks auth, ca-cert, cert-user-oid and crl.
func (c *Config) validateAuth(bad func(string, string, ...any)) {
	c.authCert, c.authPlain, c.authRadius = false, false, false
	for _, m := range c.Auth {
		switch m {
		case AuthPlain:
			c.authPlain = true
		case AuthCertificate:
			c.authCert = true
		case AuthRadius:
			c.authRadius = true
		default:
			bad("auth", "unknown method %q (want %q, %q or %q)", m, AuthPlain, AuthCertificate, AuthRadius)
		}
	}
	c.validateRadius(bad) // server/radius.go
	if len(c.Auth) == 0 && c.Auth != nil {
		bad("auth", "empty list: name %q, %q or both", AuthPlain, AuthCertificate)
	}
	if err := certs.CheckUserOID(c.CertUserOID); err != nil {
		bad("cert-user-oid", "%v", err)
	}
	if c.authCert && c.CACert == "" {
		bad("ca-cert", "must be set with auth = %q: the CAs client certificates must chain to", AuthCertificate)
	}
	if !c.authCert && (c.CACert != "" || c.CRL != "") {
		bad("ca-cert", "ca-cert and crl are used only with auth = %q", AuthCertificate)
	}
}

// authNames are the authentication methods in force, for logs.
func (c *Config) authNames() []string {
	var n []string
	if c.authCert {
		n = append(n, AuthCertificate)
	}
	if c.passwordAuth() {
		n = append(n, AuthPlain)
	}
	if c.authRadius {
		n = append(n, AuthRadius)
	}
	return n
}

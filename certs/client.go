package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Client certificates (vpnd's auth = "certificate"): the CA bundle that
// verifies them, the CRLs that revoke them, and the mapping from a
// certificate to a user name (cert-user-oid, as ocserv's).

// Well-known cert-user-oid values.
const (
	OIDUID   = "0.9.2342.19200300.100.1.1" // LDAP UID, ocserv's usual choice and kvpn's default
	OIDCN    = "2.5.4.3"                   // common name
	OIDEmail = "1.2.840.113549.1.9.1"      // emailAddress in the subject
	// SANEmail takes the first e-mail address (rfc822Name) of the subject
	// alternative names, written as ocserv writes it.
	SANEmail = "SAN(rfc822name)"
)

// Reasons a client certificate is refused (ClientCertError.Reason); they
// are also the names of vpnd's drop counters, prefixed with "cert-".
const (
	ReasonUnknownCA = "unknown-ca" // not signed by a CA in ca-cert
	ReasonExpired   = "expired"    // outside its validity period
	ReasonRevoked   = "revoked"    // listed in the CRL
	ReasonNoUser    = "no-user"    // no user name in the cert-user-oid field
	ReasonInvalid   = "invalid"    // any other verification failure (key usage, bad signature, ...)
)

// ClientCertError is a client certificate refused during the TLS
// handshake.
type ClientCertError struct {
	Reason  string // one of the Reason constants
	Subject string // the leaf's subject, when there was one
	Serial  string // the leaf's serial number, hex
	Err     error
}

func (e *ClientCertError) Error() string {
	return fmt.Sprintf("client certificate refused (%s): %v", e.Reason, e.Err)
}

func (e *ClientCertError) Unwrap() error { return e.Err }

// ClassifyClientCertError tells whether a TLS server handshake error is
// a refused client certificate, and why. It recognises crypto/tls's
// verification errors (unknown CA, expired, other) and the ones
// ClientVerifier.VerifyConnection returns (revoked, no user name).
func ClassifyClientCertError(err error) (*ClientCertError, bool) {
	var ce *ClientCertError
	if errors.As(err, &ce) {
		return ce, true
	}
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &ve) {
		return nil, false
	}
	out := &ClientCertError{Reason: ReasonInvalid, Err: ve.Err}
	if len(ve.UnverifiedCertificates) > 0 {
		leaf := ve.UnverifiedCertificates[0]
		out.Subject, out.Serial = leaf.Subject.String(), leaf.SerialNumber.Text(16)
	}
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(ve.Err, &ua):
		out.Reason = ReasonUnknownCA
	case errors.As(ve.Err, &ci) && ci.Reason == x509.Expired:
		out.Reason = ReasonExpired
	}
	return out, true
}

// LoadCAPool reads a PEM bundle of CA certificates.
func LoadCAPool(path string) (*x509.CertPool, []*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		pool.AddCert(c)
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, cas, nil
}

// CRL is a set of revoked certificates, by issuer and serial number.
type CRL struct {
	revoked    map[string]map[string]bool // raw issuer -> serial (hex) -> revoked
	NextUpdate time.Time                  // the earliest next-update of the lists (zero if none says)
	Entries    int
}

// LoadCRL reads one or more certificate revocation lists (PEM "X509 CRL"
// blocks, or one DER list) from path. Each must be signed by one of cas.
func LoadCRL(path string, cas []*x509.Certificate) (*CRL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ders [][]byte
	if strings.Contains(string(data), "-----BEGIN") {
		for rest := data; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type == "X509 CRL" {
				ders = append(ders, b.Bytes)
			}
		}
		if len(ders) == 0 {
			return nil, fmt.Errorf("%s holds no PEM \"X509 CRL\" block", path)
		}
	} else {
		ders = [][]byte{data}
	}
	crl := &CRL{revoked: map[string]map[string]bool{}}
	for i, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("%s: list %d: %w", path, i+1, err)
		}
		signed := false
		for _, ca := range cas {
			if string(ca.RawSubject) == string(rl.RawIssuer) && rl.CheckSignatureFrom(ca) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return nil, fmt.Errorf("%s: list %d (issuer %s) is not signed by a CA in ca-cert", path, i+1, rl.Issuer)
		}
		set := crl.revoked[string(rl.RawIssuer)]
		if set == nil {
			set = map[string]bool{}
			crl.revoked[string(rl.RawIssuer)] = set
		}
		for _, e := range rl.RevokedCertificateEntries {
			set[e.SerialNumber.Text(16)] = true
			crl.Entries++
		}
		if !rl.NextUpdate.IsZero() && (crl.NextUpdate.IsZero() || rl.NextUpdate.Before(crl.NextUpdate)) {
			crl.NextUpdate = rl.NextUpdate
		}
	}
	return crl, nil
}

// Revoked reports whether c is on a list of its issuer. A nil CRL
// revokes nothing.
func (l *CRL) Revoked(c *x509.Certificate) bool {
	if l == nil {
		return false
	}
	return l.revoked[string(c.RawIssuer)][c.SerialNumber.Text(16)]
}

// CheckUserOID checks a cert-user-oid setting.
func CheckUserOID(oid string) error {
	if oid == SANEmail {
		return nil
	}
	if _, err := parseOID(oid); err != nil {
		return fmt.Errorf("%q is neither a dotted OID (UID %s, CN %s, email %s) nor %s", oid, OIDUID, OIDCN, OIDEmail, SANEmail)
	}
	return nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ".") {
		n := 0
		if part == "" || len(part) > 9 {
			return nil, errors.New("bad OID")
		}
		for _, r := range part {
			if r < '0' || r > '9' {
				return nil, errors.New("bad OID")
			}
			n = n*10 + int(r-'0')
		}
		oid = append(oid, n)
	}
	if len(oid) < 2 {
		return nil, errors.New("bad OID")
	}
	return oid, nil
}

// UserOf returns the user name c carries in the field oid names (see
// CheckUserOID): the first subject attribute with that OID, or for
// SANEmail the first e-mail subject alternative name. An empty or missing
// field is an error.
func UserOf(c *x509.Certificate, oid string) (string, error) {
	if oid == SANEmail {
		for _, e := range c.EmailAddresses {
			if e != "" {
				return e, nil
			}
		}
		return "", errors.New("certificate has no e-mail subject alternative name")
	}
	want, err := parseOID(oid)
	if err != nil {
		return "", err
	}
	for _, atv := range c.Subject.Names {
		if !atv.Type.Equal(want) {
			continue
		}
		if s, ok := atv.Value.(string); ok && s != "" {
			return s, nil
		}
	}
	return "", fmt.Errorf("certificate subject %q has no %s attribute", c.Subject.String(), oid)
}

// ClientVerifier is the part of client certificate checking that
// crypto/tls does not do (it checks the chain against ca-cert, the
// validity period and the client-auth key usage): revocation and the
// user name. CRL returns the lists in force (nil: none), so a reload can
// swap them.
type ClientVerifier struct {
	UserOID string
	CRL     func() *CRL
}

// VerifyConnection is a tls.Config.VerifyConnection for a server: a
// verified client certificate whose chain holds a revoked certificate,
// or that carries no user name, is refused with a ClientCertError.
// Connections without a client certificate pass (the login refuses them
// where a certificate is required).
func (v *ClientVerifier) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	fail := func(reason string, err error) error {
		return &ClientCertError{Reason: reason, Subject: leaf.Subject.String(), Serial: leaf.SerialNumber.Text(16), Err: err}
	}
	if v.CRL != nil {
		if crl := v.CRL(); crl != nil {
			for _, chain := range cs.VerifiedChains {
				for _, c := range chain[:len(chain)-1] { // the root is trusted as configured
					if crl.Revoked(c) {
						return fail(ReasonRevoked, fmt.Errorf("certificate %s (serial %s) is revoked by the CRL", c.Subject, c.SerialNumber.Text(16)))
					}
				}
			}
		}
	}
	if _, err := UserOf(leaf, v.UserOID); err != nil {
		return fail(ReasonNoUser, err)
	}
	return nil
}

// UserOfConn returns the user name of a connection's verified client
// certificate, "" if it presented none.
func (v *ClientVerifier) UserOfConn(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 {
		return ""
	}
	u, _ := UserOf(cs.VerifiedChains[0][0], v.UserOID)
	return u
}

// LoadClientKeyPair reads a client certificate (chain) and its key for
// a TLS client: PEM files, the key either in keyPath or, when keyPath is
// "", in certPath beside the certificate (as openconnect accepts).
func LoadClientKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	if keyPath == "" {
		keyPath = certPath
	}
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return c, fmt.Errorf("loading client certificate %s / key %s: %w", certPath, keyPath, err)
	}
	c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return c, fmt.Errorf("parsing client certificate %s: %w", certPath, err)
	}
	return c, nil
}

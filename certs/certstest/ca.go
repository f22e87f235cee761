// Package certstest is a small certificate authority for tests and demos:
// CA and client certificates and CRLs, minted under certs/ (the one place
// that creates certificates).
package certstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"time"
)

// CA is a certificate authority with its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	crls int64 // CRL numbers issued
}

// NewCA creates a self-signed ECDSA P-256 CA named cn, valid from an
// hour ago for validity.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"kvpn"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// ClientCertOptions name a client certificate's holder and validity.
type ClientCertOptions struct {
	CommonName string
	UID        string   // LDAP UID attribute (0.9.2342.19200300.100.1.1), if set
	Email      []string // e-mail subject alternative names
	// NotBefore and NotAfter default to an hour ago and a year from now.
	NotBefore, NotAfter time.Time
}

// oidUID is the LDAP UID attribute type.
var oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

// ClientCert is an issued client certificate with its key.
type ClientCert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// IssueClient issues an ECDSA P-256 client certificate (client-auth key
// usage) signed by ca.
func (ca *CA) IssueClient(o ClientCertOptions) (*ClientCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = time.Now().AddDate(1, 0, 0)
	}
	subj := pkix.Name{CommonName: o.CommonName, Organization: []string{"kvpn"}}
	if o.UID != "" {
		subj.ExtraNames = append(subj.ExtraNames, pkix.AttributeTypeAndValue{Type: oidUID, Value: o.UID})
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        subj,
		EmailAddresses: o.Email,
		NotBefore:      nb,
		NotAfter:       na,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ClientCert{Cert: c, Key: key}, nil
}

// CertPEM is the certificate in PEM.
func (c *ClientCert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM is the private key in PEM (PKCS #8).
func (c *ClientCert) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes the certificate (0644) and the key (0600) as PEM.
func (c *ClientCert) WriteFiles(certPath, keyPath string) error {
	k, err := c.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, k, 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, c.CertPEM(), 0o644)
}

// CRL returns a PEM certificate revocation list, signed by ca, that
// revokes certs (which must be ca's), valid from now for validity.
func (ca *CA) CRL(validity time.Duration, certs ...*x509.Certificate) ([]byte, error) {
	now := time.Now()
	var entries []x509.RevocationListEntry
	for _, c := range certs {
		if string(c.RawIssuer) != string(ca.Cert.RawSubject) {
			return nil, errors.New("certs: CRL: certificate not issued by this CA")
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now.Add(-time.Minute)})
	}
	ca.crls++
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(ca.crls),
		ThisUpdate:                now.Add(-time.Minute),
		NextUpdate:                now.Add(validity),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

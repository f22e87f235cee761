package certs

import (
	"crypto/tls"
	"crypto/x509"
	"kvpn/certs/certstest"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestUserOf(t *testing.T) {
	ca, err := certstest.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	full, err := ca.IssueClient(certstest.ClientCertOptions{CommonName: "Alice Example", UID: "alice", Email: []string{"alice@example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := ca.IssueClient(certstest.ClientCertOptions{CommonName: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert *x509.Certificate
		oid  string
		want string // "" = error
	}{
		{full.Cert, OIDUID, "alice"},
		{full.Cert, OIDCN, "Alice Example"},
		{full.Cert, SANEmail, "alice@example.net"},
		{full.Cert, "2.5.4.10", "kvpn"}, // any subject attribute: O
		{bare.Cert, OIDCN, "bob"},
		{bare.Cert, OIDUID, ""},
		{bare.Cert, SANEmail, ""},
		{bare.Cert, OIDEmail, ""},
	} {
		got, err := UserOf(tc.cert, tc.oid)
		if tc.want == "" {
			if err == nil {
				t.Errorf("UserOf(%s, %s) = %q, want an error", tc.cert.Subject, tc.oid, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("UserOf(%s, %s) = %q, %v; want %q", tc.cert.Subject, tc.oid, got, err, tc.want)
		}
	}
}

func TestCheckUserOID(t *testing.T) {
	for _, ok := range []string{OIDUID, OIDCN, OIDEmail, SANEmail} {
		if err := CheckUserOID(ok); err != nil {
			t.Errorf("CheckUserOID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "UID", "2", "2..5", "2.5.x", "SAN(dnsname)", "1.2.3456789012"} {
		if err := CheckUserOID(bad); err == nil {
			t.Errorf("CheckUserOID(%q) accepted", bad)
		}
	}
}

// handshake runs a TLS handshake between a server that verifies client
// certificates against ca (with crl) and a client presenting cc (nil:
// none). It returns the server's error and its view of the connection.
func handshake(t *testing.T, ca *certstest.CA, crl *CRL, cc *certstest.ClientCert) (tls.ConnectionState, error) {
	t.Helper()
	srvCA, err := certstest.NewCA("server", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := srvCA.IssueClient(certstest.ClientCertOptions{CommonName: "server"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	v := &ClientVerifier{UserOID: OIDUID, CRL: func() *CRL { return crl }}
	scfg := &tls.Config{
		Certificates:     []tls.Certificate{{Certificate: [][]byte{sc.Cert.Raw}, PrivateKey: sc.Key}},
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        pool,
		VerifyConnection: v.VerifyConnection,
	}
	ccfg := &tls.Config{InsecureSkipVerify: true}
	if cc != nil {
		// Sent whatever CAs the server names, as vpnc does.
		kp := &tls.Certificate{Certificate: [][]byte{cc.Cert.Raw}, PrivateKey: cc.Key}
		ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp, nil }
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(b, ccfg)
		c.Handshake()
		c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict comes after the client's Finished
		b.Close()
	}()
	s := tls.Server(a, scfg)
	a.SetDeadline(time.Now().Add(10 * time.Second))
	err = s.Handshake()
	return s.ConnectionState(), err
}

func TestClientCertRefusals(t *testing.T) {
	ca, err := certstest.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certstest.NewCA("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *certstest.CA, o certstest.ClientCertOptions) *certstest.ClientCert {
		c, err := ca.IssueClient(o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := issue(ca, certstest.ClientCertOptions{CommonName: "alice", UID: "alice"})
	revoked := issue(ca, certstest.ClientCertOptions{CommonName: "mallory", UID: "mallory"})
	expired := issue(ca, certstest.ClientCertOptions{CommonName: "old", UID: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	foreign := issue(other, certstest.ClientCertOptions{CommonName: "eve", UID: "eve"})
	noUID := issue(ca, certstest.ClientCertOptions{CommonName: "carol"})

	dir := t.TempDir()
	crlPEM, err := ca.CRL(time.Hour, revoked.Cert)
	if err != nil {
		t.Fatal(err)
	}
	crlPath := filepath.Join(dir, "crl.pem")
	if err := os.WriteFile(crlPath, crlPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	crl, err := LoadCRL(crlPath, []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if crl.Entries != 1 || !crl.Revoked(revoked.Cert) || crl.Revoked(good.Cert) {
		t.Fatalf("CRL: %d entries, revoked=%v good=%v", crl.Entries, crl.Revoked(revoked.Cert), crl.Revoked(good.Cert))
	}
	if _, err := LoadCRL(crlPath, []*x509.Certificate{other.Cert}); err == nil {
		t.Fatal("a CRL not signed by a configured CA was accepted")
	}

	cs, err := handshake(t, ca, crl, good)
	if err != nil {
		t.Fatalf("good certificate refused: %v", err)
	}
	if u := (&ClientVerifier{UserOID: OIDUID}).UserOfConn(cs); u != "alice" {
		t.Fatalf("UserOfConn = %q, want alice", u)
	}
	cs, err = handshake(t, ca, crl, nil)
	if err != nil || len(cs.PeerCertificates) != 0 {
		t.Fatalf("no certificate: err %v, %d peer certificates (the login refuses, not the handshake)", err, len(cs.PeerCertificates))
	}
	for _, tc := range []struct {
		name   string
		cert   *certstest.ClientCert
		reason string
	}{
		{"revoked", revoked, ReasonRevoked},
		{"expired", expired, ReasonExpired},
		{"other CA", foreign, ReasonUnknownCA},
		{"no UID", noUID, ReasonNoUser},
	} {
		_, err := handshake(t, ca, crl, tc.cert)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		ce, ok := ClassifyClientCertError(err)
		if !ok || ce.Reason != tc.reason {
			t.Errorf("%s: %v classified %+v, %v; want %s", tc.name, err, ce, ok, tc.reason)
			continue
		}
		if ce.Serial != tc.cert.Cert.SerialNumber.Text(16) {
			t.Errorf("%s: serial %s, want %s", tc.name, ce.Serial, tc.cert.Cert.SerialNumber.Text(16))
		}
	}
	if _, ok := ClassifyClientCertError(net.ErrClosed); ok {
		t.Error("a network error classified as a certificate refusal")
	}
}

func TestLoadClientKeyPair(t *testing.T) {
	ca, err := certstest.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueClient(certstest.ClientCertOptions{CommonName: "alice", UID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := c.WriteFiles(cp, kp); err != nil {
		t.Fatal(err)
	}
	kc, err := LoadClientKeyPair(cp, kp)
	if err != nil || !kc.Leaf.Equal(c.Cert) {
		t.Fatalf("LoadClientKeyPair: %v", err)
	}
	// Both in one file, as openconnect accepts with -c alone.
	key, _ := c.KeyPEM()
	both := filepath.Join(dir, "both.pem")
	os.WriteFile(both, append(c.CertPEM(), key...), 0o600)
	if _, err := LoadClientKeyPair(both, ""); err != nil {
		t.Fatalf("certificate and key in one file: %v", err)
	}
	if _, err := LoadClientKeyPair(cp, ""); err == nil {
		t.Fatal("a certificate without its key was accepted")
	}
	if _, _, err := LoadCAPool(kp); err == nil {
		t.Fatal("LoadCAPool accepted a file without certificates")
	}
}

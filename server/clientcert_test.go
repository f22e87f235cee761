package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvpn/certs"
	"kvpn/certs/certstest"
)

// certPKI is a CA with client certificates for the tests: alice (UID
// alice), a revoked one, an expired one, one from another CA, and the
// CRL revoking the revoked one.
type certPKI struct {
	dir                                   string
	ca                                    *certstest.CA
	alice, bob, revoked, expired, foreign *certstest.ClientCert
	caPath, crlPath                       string
}

func newCertPKI(t *testing.T) *certPKI {
	t.Helper()
	p := &certPKI{dir: t.TempDir()}
	var err error
	if p.ca, err = certstest.NewCA("kvpn test CA", time.Hour); err != nil {
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
	p.alice = issue(p.ca, certstest.ClientCertOptions{CommonName: "Alice", UID: "alice"})
	p.bob = issue(p.ca, certstest.ClientCertOptions{CommonName: "Bob", UID: "bob"})
	p.revoked = issue(p.ca, certstest.ClientCertOptions{CommonName: "Alice", UID: "alice"})
	p.expired = issue(p.ca, certstest.ClientCertOptions{CommonName: "Alice", UID: "alice",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	p.foreign = issue(other, certstest.ClientCertOptions{CommonName: "Alice", UID: "alice"})
	p.caPath, p.crlPath = filepath.Join(p.dir, "ca.pem"), filepath.Join(p.dir, "crl.pem")
	crl, err := p.ca.CRL(time.Hour, p.revoked.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.caPath, p.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.crlPath, crl, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// certServer is a login server with auth set to methods.
func (p *certPKI) server(t *testing.T, methods ...string) *loginServer {
	return newLoginServer(t, func(c *Config) {
		c.Auth = methods
		c.CACert, c.CRL = p.caPath, p.crlPath
	})
}

// certPost opens a TLS connection presenting cc (nil: none), posts body
// and returns the answer's status, body and webvpn cookie value; err is
// the handshake's or the exchange's failure.
func (ls *loginServer) certPost(cc *certstest.ClientCert, body string) (int, string, string, error) {
	raw, err := net.DialTimeout("tcp", ls.addr, 5*time.Second)
	if err != nil {
		return 0, "", "", err
	}
	cfg := &tls.Config{InsecureSkipVerify: true}
	if cc != nil {
		kp := &tls.Certificate{Certificate: [][]byte{cc.Cert.Raw}, PrivateKey: cc.Key}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp, nil }
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := post(c, body, ""); err != nil {
		return 0, "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", "", err
	}
	b, _ := io.ReadAll(resp.Body)
	cookie := ""
	for _, ck := range resp.Cookies() {
		if ck.Name == "webvpn" {
			cookie = ck.Value
		}
	}
	return resp.StatusCode, string(b), cookie, nil
}

// TestCertOnlyLogin: with auth = "certificate" the first POST logs in
// by the certificate alone (no form), as the certificate's UID; the
// cookie is bound to that user's certificate.
func TestCertOnlyLogin(t *testing.T) {
	p := newCertPKI(t)
	ls := p.server(t, AuthCertificate)
	code, body, cookie, err := ls.certPost(p.alice, initBody)
	if err != nil || code != http.StatusOK || cookie == "" || !strings.Contains(body, `type="complete"`) {
		t.Fatalf("certificate login: %d %v cookie %q\n%s", code, err, cookie, body)
	}
	tk, sess, err := ls.openTicket(cookie, "alice")
	if err != nil || sess == nil || sess.user != "alice" || !tk.Cert || !sess.cert {
		t.Fatalf("opening the cookie over alice's certificate: %v (ticket %+v)", err, tk)
	}
	// Without the certificate, or with another user's, the cookie is
	// refused (CONNECT, refresh, logout).
	for _, other := range []string{"", "bob"} {
		if _, _, err := ls.openTicket(cookie, other); !errors.Is(err, errCertCookieUser) {
			t.Errorf("cookie over certificate user %q: %v, want %v", other, err, errCertCookieUser)
		}
	}
	if got := ls.Snapshot().Drops["cert-cookie-mismatch"]; got != 2 {
		t.Errorf("cert-cookie-mismatch = %d, want 2", got)
	}
	// A password login's cookie (from another node, say) is refused
	// where certificates are required.
	if _, _, err := ls.openTicket(mustSeal(t, ls.Server, "alice", false), "alice"); !errors.Is(err, errCookieNotCertAut) {
		t.Errorf("password cookie on a certificate server: %v", err)
	}
	// The password file plays no part: alice is in it, bob is not.
	code, body, cookie, err = ls.certPost(p.bob, replyBody("alice", "wrong"))
	if err != nil || code != http.StatusOK || cookie == "" {
		t.Fatalf("bob's certificate login: %d %v\n%s", code, err, body)
	}
	if _, sess, err := ls.openTicket(cookie, "bob"); err != nil || sess.user != "bob" {
		t.Fatalf("bob's cookie: %v", err)
	}
	if n := ls.Snapshot().LoginFailures; n != 0 {
		t.Errorf("login failures %d, want 0", n)
	}
}

// mustSeal seals a ticket for a new session of user.
func mustSeal(t *testing.T, s *Server, user string, cert bool) string {
	t.Helper()
	sess := s.newSession(user, netip.Addr{})
	c, err := s.cookies.Issue(sess, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sess.cookie, sess.cert = c, cert
	text, err := s.sealTicket(sess)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TestCertRefusals: a certificate that is revoked, expired, from another
// CA, or without a UID fails the TLS handshake, each counted by reason;
// no certificate gets a form without inputs and a closed connection.
func TestCertRefusals(t *testing.T) {
	p := newCertPKI(t)
	noUID, err := p.ca.IssueClient(certstest.ClientCertOptions{CommonName: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	ls := p.server(t, AuthCertificate)
	for _, tc := range []struct {
		name string
		cc   *certstest.ClientCert
		drop string
	}{
		{"revoked", p.revoked, "cert-revoked"},
		{"expired", p.expired, "cert-expired"},
		{"other CA", p.foreign, "cert-unknown-ca"},
		{"no UID", noUID, "cert-no-user"},
	} {
		code, body, cookie, err := ls.certPost(tc.cc, initBody)
		if err == nil {
			t.Errorf("%s: answered %d, cookie %q\n%s", tc.name, code, cookie, body)
		}
		// Counted once the server's handshake returns, which may be
		// after the client has read the alert.
		waitFor(t, func() bool { return ls.Snapshot().Drops[tc.drop] == 1 })
	}
	code, body, cookie, err := ls.certPost(nil, initBody)
	if err != nil || code != http.StatusOK || cookie != "" || strings.Contains(body, "<input") || !strings.Contains(body, "no client certificate") {
		t.Fatalf("no certificate: %d %v cookie %q\n%s", code, err, cookie, body)
	}
	snap := ls.Snapshot()
	if snap.Drops["cert-missing"] != 1 || snap.Logins != 0 || len(ls.list()) != 0 {
		t.Fatalf("cert-missing %d, logins %d, sessions %d", snap.Drops["cert-missing"], snap.Logins, len(ls.list()))
	}
}

// TestCertPlusPasswordLogin: with auth = ["certificate", "plain"] the
// form asks only for the password, which is checked for the
// certificate's user whatever username is sent.
func TestCertPlusPasswordLogin(t *testing.T) {
	p := newCertPKI(t)
	ls := p.server(t, AuthCertificate, AuthPlain)
	_, body, cookie, err := ls.certPost(p.alice, initBody)
	if err != nil || cookie != "" || !strings.Contains(body, `type="password"`) || strings.Contains(body, `type="text"`) {
		t.Fatalf("init: %v cookie %q\n%s", err, cookie, body)
	}
	// bob's certificate with alice's password: checked as bob, who has
	// no password.
	if _, body, cookie, _ := ls.certPost(p.bob, replyBody("alice", "secret")); cookie != "" || !strings.Contains(body, "Login failed") {
		t.Fatalf("bob's certificate with alice's password logged in:\n%s", body)
	}
	if _, _, cookie, _ := ls.certPost(p.alice, replyBody("", "wrong")); cookie != "" {
		t.Fatal("wrong password accepted")
	}
	if n := ls.Snapshot().LoginFailures; n != 2 {
		t.Errorf("login failures %d, want 2", n)
	}
	_, body, cookie, err = ls.certPost(p.alice, replyBody("mallory", "secret"))
	if err != nil || cookie == "" {
		t.Fatalf("certificate and password: %v\n%s", err, body)
	}
	tk, sess, err := ls.openTicket(cookie, "alice")
	if err != nil || sess.user != "alice" || !tk.Cert || tk.Gen == 0 {
		t.Fatalf("cookie: %v %+v", err, tk)
	}
	// Without a certificate there is no password prompt at all.
	if _, body, _, _ := ls.certPost(nil, replyBody("alice", "secret")); strings.Contains(body, "<input") {
		t.Fatalf("no certificate: a form with inputs\n%s", body)
	}
}

// TestCertUserPolicy: [users.NAME] settings apply to a certificate
// user: alice's fixed address.
func TestCertUserPolicy(t *testing.T) {
	p := newCertPKI(t)
	ls := newLoginServer(t, func(c *Config) {
		c.Auth = AuthMethods{AuthCertificate}
		c.CACert = p.caPath
		c.Users = map[string]*UserConfig{"alice": {IPv4: "10.77.0.42"}}
	})
	_, body, cookie, err := ls.certPost(p.alice, initBody)
	if err != nil || cookie == "" {
		t.Fatalf("login: %v\n%s", err, body)
	}
	_, sess, err := ls.openTicket(cookie, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// What attach does at the CONNECT.
	sess.mu.Lock()
	err = sess.allocate(netip.Addr{}, netip.Prefix{})
	addr := sess.addr
	sess.mu.Unlock()
	if err != nil || addr.String() != "10.77.0.42" {
		t.Fatalf("address %v (%v), want alice's fixed 10.77.0.42", addr, err)
	}
}

// TestCertReloadCRL: a reload with a CRL that revokes a connected
// session's certificate ends that session.
func TestCertReloadCRL(t *testing.T) {
	p := newCertPKI(t)
	ls := p.server(t, AuthCertificate)
	_, _, cookie, err := ls.certPost(p.bob, initBody)
	if err != nil || cookie == "" {
		t.Fatalf("login: %v", err)
	}
	_, sess, err := ls.openTicket(cookie, "bob")
	if err != nil {
		t.Fatal(err)
	}
	sess.mu.Lock()
	sess.certLeaf = p.bob.Cert // as its CONNECT records it
	sess.mu.Unlock()
	crl, err := p.ca.CRL(time.Hour, p.revoked.Cert, p.bob.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.crlPath, crl, 0o644); err != nil {
		t.Fatal(err)
	}
	ls.active = ls.cfg
	cfg := *ls.cfg
	if _, err := ls.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	sess.mu.Lock()
	ended := sess.ended
	sess.mu.Unlock()
	if !ended {
		t.Fatal("session of a revoked certificate not ended by the reload")
	}
	if code, _, _, err := ls.certPost(p.bob, initBody); err == nil {
		t.Fatalf("revoked certificate logged in after the reload (%d)", code)
	}
}

// TestAuthConfig: the auth key takes a string or a list; certificate
// needs ca-cert; unknown methods and OIDs are refused.
func TestAuthConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		toml, err string
	}{
		{`auth = "plain"`, ""},
		{`auth = "certificate"` + "\nca-cert = \"/x/ca.pem\"", ""},
		{`auth = ["certificate", "plain"]` + "\nca-cert = \"/x/ca.pem\"\ncert-user-oid = \"2.5.4.3\"", ""},
		{`auth = "certificate"` + "\nca-cert = \"/x/ca.pem\"\ncert-user-oid = \"SAN(rfc822name)\"", ""},
		{`auth = "certificate"`, "ca-cert: must be set"},
		{`auth = "pam"`, `unknown method "pam"`},
		{`auth = []`, "empty list"},
		{`auth = 3`, "want a method name"},
		{`auth = "certificate"` + "\nca-cert = \"/x/ca.pem\"\ncert-user-oid = \"UID\"", "cert-user-oid"},
		{`ca-cert = "/x/ca.pem"`, "used only with auth"},
	} {
		path := filepath.Join(dir, "vpnd.toml")
		os.WriteFile(path, []byte(tc.toml+"\n"), 0o600)
		cfg, err := LoadConfig(path, dir)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.toml, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.toml, err, tc.err)
		case err == nil && strings.Contains(tc.toml, "certificate") != cfg.certAuth():
			t.Errorf("%q: certAuth %v", tc.toml, cfg.certAuth())
		}
	}
	cfg := DefaultConfig(dir)
	if err := cfg.Validate(); err != nil || cfg.certAuth() || !cfg.passwordAuth() || cfg.CertUserOID != certs.OIDUID {
		t.Fatalf("defaults: %v cert %v password %v oid %s", err, cfg.certAuth(), cfg.passwordAuth(), cfg.CertUserOID)
	}
}

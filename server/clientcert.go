package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"kvpn/certs"
	"kvpn/record"
)

// Client certificates (auth = "certificate"). crypto/tls verifies a
// certificate the client presents against ca-cert (chain, validity
// period, client-auth key usage); certs.ClientVerifier adds the CRL and
// the user name (cert-user-oid). A refused certificate fails the TLS
// handshake, is logged with its reason and counted (cert-* drops). A
// connection without a certificate gets through the handshake and is
// refused at the login, with a message the client can show.
//
// The session cookie of a certificate login is bound to the certificate's
// user (auth.Ticket.Cert): a CONNECT, resume, refresh or logout with it
// must come over a connection presenting a valid certificate of the same
// user, so a stolen cookie is of no use without the key, and a revoked
// certificate cannot resume its session on any node.

// Errors of the certificate checks at login and on a cookie.
var (
	errNoClientCert     = errors.New("no client certificate")
	errCertCookieUser   = errors.New("cookie was issued to a certificate login; this connection presents no valid certificate of that user")
	errCookieNotCertAut = errors.New("cookie was not issued to a certificate login, and this server requires one")
)

// setupClientAuth makes tlsCfg ask clients for a certificate and verify
// it, when logins need one.
func (s *Server) setupClientAuth(tlsCfg *tls.Config, set *Settings) {
	if !s.cfg.certAuth() {
		return
	}
	s.certVerifier = &certs.ClientVerifier{
		UserOID: s.cfg.CertUserOID,
		CRL:     func() *certs.CRL { return s.currentSettings().CRL },
	}
	tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	tlsCfg.ClientCAs = set.CAPool
	tlsCfg.VerifyConnection = s.certVerifier.VerifyConnection
}

// certUserOf is the user name of the connection's verified client
// certificate, and the certificate; "" and nil if it presented none or
// logins take no certificate.
func (s *Server) certUserOf(conn record.Conn) (string, *x509.Certificate) {
	if s.certVerifier == nil || conn == nil {
		return "", nil
	}
	cs := conn.ConnectionState()
	u := s.certVerifier.UserOfConn(cs)
	if u == "" {
		return "", nil
	}
	return u, cs.VerifiedChains[0][0]
}

// certRefused logs and counts a TLS handshake that failed on the client's
// certificate; it reports whether err was that.
func (s *Server) certRefused(err error, log *slog.Logger) bool {
	ce, ok := certs.ClassifyClientCertError(err)
	if !ok {
		return false
	}
	c := &s.Counters
	switch ce.Reason {
	case certs.ReasonUnknownCA:
		c.CertUnknownCA.Add(1)
	case certs.ReasonExpired:
		c.CertExpired.Add(1)
	case certs.ReasonRevoked:
		c.CertRevoked.Add(1)
	case certs.ReasonNoUser:
		c.CertNoUser.Add(1)
	default:
		c.CertInvalid.Add(1)
	}
	// Each one, as every failed TLS handshake is logged: a client pays
	// a full handshake for it.
	log.Warn("client certificate refused", "reason", ce.Reason, "subject", ce.Subject, "serial", ce.Serial, "err", ce.Err)
	return true
}

// checkCertCookie refuses a ticket whose binding to a certificate login
// does not hold on a connection whose certificate maps to certUser ("":
// none).
func (s *Server) checkCertCookie(cert bool, user, certUser string) error {
	if cert && user != certUser {
		s.Counters.CertCookieMismatch.Add(1)
		if certUser == "" {
			return errCertCookieUser
		}
		return fmt.Errorf("%w (it presents %q, the cookie names %q)", errCertCookieUser, certUser, user)
	}
	if !cert && s.cfg.certAuth() {
		s.Counters.CertCookieMismatch.Add(1)
		return errCookieNotCertAut
	}
	return nil
}

// endRevokedCerts ends the sessions whose certificate the CRL just loaded
// revokes (a reload with a new crl file).
func (s *Server) endRevokedCerts(crl *certs.CRL) {
	if crl == nil {
		return
	}
	var wg sync.WaitGroup
	for _, sess := range s.list() {
		sess.mu.Lock()
		c := sess.certLeaf
		sess.mu.Unlock()
		if c == nil || !crl.Revoked(c) {
			continue
		}
		s.Counters.CertRevoked.Add(1)
		s.log.Warn("ending session: its client certificate is revoked by the reloaded CRL",
			"user", sess.user, "session", sess.id, "serial", c.SerialNumber.Text(16))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.terminate("client certificate revoked")
		}()
	}
	wg.Wait()
}

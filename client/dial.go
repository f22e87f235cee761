package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvpn/certs"
	"kvpn/cstp"
	"kvpn/ktlsbridge"
	"kvpn/record"
	"kvpn/session"
)

const (
	dialTimeout = 10 * time.Second
	// exchangeTimeout bounds the handshake plus one HTTP exchange.
	exchangeTimeout = 30 * time.Second
)

// tlsConfig builds the client's TLS policy: pinned certificate, a CA file,
// or the system roots, checked in VerifyConnection so that a failure can
// tell the user the pin to pass with --servercert (as openconnect does).
func (o *Options) tlsConfig() (*tls.Config, error) {
	cfg := record.BaseConfig()
	cfg.ServerName = o.host()
	cfg.InsecureSkipVerify = true // verification is done below, always
	check, err := certs.ServerCheck(o.ServerCert, o.CAFile, cfg.ServerName)
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = check
	if o.CertFile != "" {
		kp, err := certs.LoadClientKeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, err
		}
		// Presented whatever CAs the server names in its request (as
		// openconnect does): a server that does not trust it says why.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	return cfg, nil
}

// errCertRefused means the server refused our client certificate (or
// wanted one and got none): retrying cannot help.
var errCertRefused = errors.New("server refused the client certificate")

// certRefusal turns a TLS alert about the client's certificate, received
// in the handshake (TLS 1.2) or on the first read after it (TLS 1.3,
// where the server checks the certificate after the client's Finished),
// into an ExitAuth error wrapping errCertRefused; other errors come back
// as they are.
func certRefusal(err error) error {
	if err == nil {
		return nil
	}
	var why string
	var op *net.OpError
	var ka *ktlsbridge.AlertError
	switch {
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "certificate"):
		// From crypto/tls: the handshake's alerts.
		why = op.Err.Error()
	case errors.As(err, &ka) && certAlerts[ka.Description] != "":
		// From kvpn's record layer: an alert after the handshake.
		why = "tls: " + certAlerts[ka.Description]
	default:
		return err
	}
	return withCode(ExitAuth, fmt.Errorf("%w (%s)", errCertRefused, why))
}

// certAlerts are the TLS alerts about a certificate (RFC 8446 6.2).
var certAlerts = map[uint8]string{
	42:  "bad certificate",
	43:  "unsupported certificate",
	44:  "revoked certificate",
	45:  "expired certificate",
	46:  "unknown certificate",
	48:  "unknown certificate authority",
	116: "certificate required",
}

// conn is one TLS connection to the server with an HTTP exchange on it.
type conn struct {
	rc      record.Conn
	br      *bufio.Reader
	host    string
	cookies map[string]string
	// extensions is what a kvpn server listed in X-Kvpn-Extensions.
	extensions string
}

// dial connects and runs the TLS handshake. Failures are ExitUnreachable.
func (o *Options) dial(ctx context.Context, tlsCfg *tls.Config) (*conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	raw, err := d.DialContext(ctx, "tcp", o.dialTarget())
	if err != nil {
		return nil, withCode(ExitUnreachable, fmt.Errorf("cannot reach %s: %w", o.addr(), err))
	}
	raw.SetDeadline(time.Now().Add(exchangeTimeout))
	hctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	rc, err := ktlsbridge.Client(hctx, raw, tlsCfg, o.KTLS)
	if err != nil {
		if cerr := certRefusal(err); cerr != err {
			return nil, cerr
		}
		code := ExitUnreachable
		if errors.Is(err, ktlsbridge.ErrKernelRequired) {
			code = ExitKernelTLS
		}
		if o.CertFile != "" && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)) {
			// ocserv refuses a certificate by closing the connection, no
			// alert; say what is likely.
			err = fmt.Errorf("%w (the server may have refused the client certificate)", err)
		}
		return nil, withCode(code, fmt.Errorf("TLS handshake with %s: %w", o.addr(), err))
	}
	o.Log.Debug("record layer", "engines", rc.Describe())
	return &conn{rc: rc, br: session.NewFrameReader(rc), host: o.hostPort(), cookies: map[string]string{}}, nil
}

// post sends an XML body and returns the response and its body.
func (c *conn) post(path string, body []byte) (*http.Response, []byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n", path, c.host, cstp.UserAgent)
	b.WriteString("Accept: */*\r\nX-Transcend-Version: 1\r\nX-Aggregate-Auth: 1\r\nX-Support-HTTP-Auth: true\r\n")
	b.WriteString("Content-Type: application/xml\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	c.writeCookies(&b)
	b.WriteString("\r\n")
	b.Write(body)
	c.rc.SetDeadline(time.Now().Add(exchangeTimeout))
	if _, err := c.rc.Write(b.Bytes()); err != nil {
		return nil, nil, err
	}
	resp, data, err := cstp.ReadPostAnswer(c.br)
	if err != nil {
		return nil, nil, fmt.Errorf("reading answer to POST %s: %w", path, err)
	}
	for _, ck := range resp.Cookies() {
		c.cookies[ck.Name] = ck.Value
	}
	if ext := resp.Header.Get(cstp.HeaderExtensions); ext != "" {
		c.extensions = ext
	}
	return resp, data, nil
}

func (c *conn) writeCookies(b *bytes.Buffer) {
	if len(c.cookies) == 0 {
		return
	}
	parts := make([]string, 0, len(c.cookies))
	for k, v := range c.cookies {
		parts = append(parts, k+"="+v)
	}
	fmt.Fprintf(b, "Cookie: %s\r\n", strings.Join(parts, "; "))
}

func (c *conn) close() { c.rc.Close() }

// statusError describes a non-200 answer.
func statusError(resp *http.Response, what string) error {
	return fmt.Errorf("%s: server answered %s", what, strconv.Quote(resp.Status))
}

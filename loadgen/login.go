package loadgen

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
	"strings"
	"sync"
	"syscall"
	"time"

	"kvpn/cstp"
)

const (
	dialTimeout = 10 * time.Second
	// exchangeTimeout bounds the TLS handshake plus the login and CONNECT
	// exchanges of one session.
	exchangeTimeout = 30 * time.Second
	// loginRounds bounds the forms answered (ocserv sends two).
	loginRounds = 8
	// requestBaseMTU and requestMTU are the X-CSTP-Base-MTU and X-CSTP-MTU
	// sent, vpnc's defaults (a 1500-byte link, 110 bytes of overhead).
	requestBaseMTU = 1500
	requestMTU     = requestBaseMTU - 110
	clientHostname = "kvpnload"
)

// headReaders hold the login and CONNECT exchanges: cstp.PeekHead needs
// a buffer larger than cstp.MaxHeadBytes, which a session holds only
// while it logs in (at most Parallel at once), not for its lifetime.
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, cstp.MaxHeadBytes+1) }}

// sessionError is why a session (or its login) ended: one of the Fail*
// reasons, possibly with a detail in brackets, and the error.
type sessionError struct {
	reason string
	err    error
}

func (e *sessionError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

func failure(reason string, err error) error { return &sessionError{reason: reason, err: err} }

// reasonOf is err's failure reason.
func reasonOf(err error) string {
	var se *sessionError
	if errors.As(err, &se) {
		return se.reason
	}
	return FailReadError
}

// exchange is one session's TLS connection during login and CONNECT.
type exchange struct {
	cfg     *Config
	tc      *tls.Conn
	br      *bufio.Reader
	cookies map[string]string
}

// dialTLS connects (from cfg.LocalAddr if set) and runs the handshake.
func dialTLS(ctx context.Context, cfg *Config, tlsCfg *tls.Config) (*tls.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	if cfg.LocalAddr.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: cfg.LocalAddr.AsSlice()}
	}
	raw, err := d.DialContext(ctx, "tcp", cfg.addr())
	if err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, failure(FailAddrNotAvail, err)
		}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			return nil, failure(FailFileLimit, err)
		}
		return nil, failure(FailTLSDial, err)
	}
	raw.SetDeadline(time.Now().Add(exchangeTimeout))
	tc := tls.Client(raw, tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, failure(FailTLSHandshake, err)
	}
	return tc, nil
}

// post sends an XML body as openconnect does and returns the answer.
func (x *exchange) post(path string, body []byte) (*http.Response, []byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n", path, x.cfg.hostPort(), cstp.UserAgent)
	b.WriteString("Accept: */*\r\nX-Transcend-Version: 1\r\nX-Aggregate-Auth: 1\r\nX-Support-HTTP-Auth: true\r\n")
	b.WriteString("Content-Type: application/xml; charset=utf-8\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	if len(x.cookies) > 0 {
		parts := make([]string, 0, len(x.cookies))
		for k, v := range x.cookies {
			parts = append(parts, k+"="+v)
		}
		fmt.Fprintf(&b, "Cookie: %s\r\n", strings.Join(parts, "; "))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := x.tc.Write(b.Bytes()); err != nil {
		return nil, nil, err
	}
	resp, data, err := cstp.ReadPostAnswer(x.br)
	if err != nil {
		return nil, nil, err
	}
	for _, ck := range resp.Cookies() {
		x.cookies[ck.Name] = ck.Value
	}
	return resp, data, nil
}

// login runs openconnect's XML login (config-auth init, then one reply
// per form) and returns the webvpn cookie.
func (x *exchange) login(user string) (string, error) {
	resp, body, err := x.post("/", cstp.InitRequest(x.cfg.Server.String(), "v9.01"))
	if err != nil {
		return "", failure(FailLoginError, err)
	}
	sentPassword := false
	for range loginRounds {
		if resp.StatusCode != http.StatusOK {
			return "", failure(fmt.Sprintf("%s(HTTP %d)", FailLoginRefused, resp.StatusCode), errors.New(resp.Status))
		}
		msg, err := cstp.ParseServerMessage(body)
		if err != nil {
			return "", failure(FailLoginError, err)
		}
		if msg.Type == "complete" {
			if c := x.cookies["webvpn"]; c != "" {
				return c, nil
			}
			return "", failure(FailLoginError, errors.New("success without a webvpn cookie"))
		}
		if msg.Type != "auth-request" {
			return "", failure(FailLoginError, fmt.Errorf("unexpected %q document", msg.Type))
		}
		fields := make([]cstp.FormInput, 0, len(msg.Inputs))
		hasPassword := false
		for _, in := range msg.Inputs {
			switch in.Type {
			case "text":
				in.Value = user
			case "password":
				in.Value = x.cfg.Password
				hasPassword = true
			}
			fields = append(fields, in)
		}
		if hasPassword && sentPassword {
			// The password form again: the server refused the login.
			text := firstNonEmpty(msg.Error, msg.Message)
			return "", failure(FailLoginRefused+"("+refusalKind(text)+")", fmt.Errorf("user %q: %s", user, text))
		}
		sentPassword = sentPassword || hasPassword
		action := msg.Action
		if action == "" {
			action = "/auth"
		}
		if resp, body, err = x.post(action, cstp.AuthReply(fields, msg.Opaque)); err != nil {
			return "", failure(FailLoginError, err)
		}
	}
	return "", failure(FailLoginError, errors.New("too many form rounds"))
}

// connect sends CONNECT with the headers openconnect sends for
// PSK-NEGOTIATE DTLS (cstp.ConnectRequest) and returns the tunnel
// parameters.
func (x *exchange) connect(cookie string) (*cstp.TunnelParams, error) {
	req := &cstp.ConnectRequest{Cookie: cookie, Hostname: clientHostname, BaseMTU: requestBaseMTU, MTU: requestMTU}
	if !x.cfg.NoDTLS {
		req.DTLSCipherSuite = "PSK-NEGOTIATE"
	}
	if err := req.WriteTo(x.tc, x.cfg.hostPort()); err != nil {
		return nil, failure(FailConnectError, err)
	}
	resp, err := cstp.ReadResponse(x.br, http.MethodConnect)
	if err != nil {
		return nil, failure(FailConnectError, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, failure(fmt.Sprintf("%s(HTTP %d)", FailConnectRefused, resp.StatusCode), errors.New(resp.Status+" "+resp.Header.Get("X-Reason")))
	}
	p, err := cstp.ParseTunnelParams(resp.Header)
	if err != nil {
		return nil, failure(FailConnectError, err)
	}
	return p, nil
}

// release returns the head reader to the pool and gives back a reader for
// the tunnel: the bytes it still held (the first CSTP frames) followed by
// the connection.
func (x *exchange) release() io.Reader {
	var r io.Reader = x.tc
	if n := x.br.Buffered(); n > 0 {
		left, _ := x.br.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(left)), x.tc)
	}
	x.br.Reset(nil)
	headReaders.Put(x.br)
	x.br = nil
	return r
}

// refusalKind names why a server sent the password form again, from its
// message: "throttled" and "busy" (vpnd's "Too many failed logins; try
// again in 1s.", "Server busy, please try again."), "limit" (a session
// limit), else "password" (ocserv and vpnd say "Login failed."). The
// server's text itself is not a key: it would make the failure table
// as long as a hostile server likes.
func refusalKind(text string) string {
	t := strings.ToLower(text)
	switch {
	case strings.Contains(t, "busy"):
		return "busy"
	case strings.Contains(t, "try again"), strings.Contains(t, "too many"):
		return "throttled"
	case strings.Contains(t, "limit"):
		return "limit"
	}
	return "password"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

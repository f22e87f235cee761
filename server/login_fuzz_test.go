package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/record"
)

// streamConn is a record.Conn whose peer sent in and nothing more; what the
// server writes is kept in out.
type streamConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error) {
	// Short reads, as TLS records arrive, exercise the head scanner's
	// waiting for more.
	if len(p) > 1000 {
		p = p[:1000]
	}
	return c.in.Read(p)
}
func (c *streamConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *streamConn) WriteRecords(bufs [][]byte, off int) error {
	for _, b := range bufs {
		c.out.Write(b[off:])
	}
	return nil
}
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 40000}
}
func (c *streamConn) LocalAddr() net.Addr                  { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443} }
func (c *streamConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }
func (c *streamConn) Engine() record.Engine                { return record.Engine{} }

// FuzzLoginPhase feeds bytes as the decrypted TLS stream of a connection
// that has not logged in: request heads, login XML, the throttle, the
// session limits and the CONNECT's cookie check. It must never panic, and
// every answer is a well-formed HTTP response.
func FuzzLoginPhase(f *testing.F) {
	for _, seed := range []string{
		"POST / HTTP/1.1\r\nHost: vpn\r\nContent-Type: application/xml\r\nContent-Length: " + itoa(len(initBody)) + "\r\n\r\n" + initBody,
		"POST / HTTP/1.1\r\nContent-Length: " + itoa(len(replyBody("alice", "secret"))) + "\r\n\r\n" + replyBody("alice", "secret"),
		"POST / HTTP/1.1\r\nContent-Length: " + itoa(len(replyBody("alice", "wrong"))) + "\r\n\r\n" + replyBody("alice", "wrong") +
			"CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nCookie: webvpn=AAAA\r\nX-CSTP-Version: 1\r\n\r\n",
		"POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<?xml\r\n0\r\n\r\n",
		"CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nX-CSTP-Base-MTU: 1500\r\n\r\nSTF\x01\x00\x04\x00\x00abcd",
		"GET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nX: " + strings.Repeat("a", cstp.MaxHeadBytes) + "\r\n\r\n",
		"POST /" + strings.Repeat("a", cstp.MaxStartLine) + " HTTP/1.1\r\n\r\n",
		"\r\n\r\n",
		"POST / HTTP/1.1\n\n",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	cfg := DefaultConfig(dir)
	if err := cfg.Validate(); err != nil {
		f.Fatal(err)
	}
	if err := auth.SetPassword(filepath.Join(dir, "passwd"), "alice", "secret"); err != nil {
		f.Fatal(err)
	}
	s := newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.ReloadPasswd(); err != nil {
		f.Fatal(err)
	}
	if err := s.loadTickets(); err != nil {
		f.Fatal(err)
	}
	// A cheap check in place of argon2id, so the fuzzer runs fast.
	s.verify = func(user, password string) bool { return user == "alice" && password == "secret" }
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &streamConn{in: bytes.NewReader(data)}
		s.serveConn(context.Background(), c, s.log, func() {})
		if out := c.out.Bytes(); len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer is not HTTP: %q", out[:min(len(out), 64)])
		}
		for _, sess := range s.list() {
			sess.end("fuzz")
		}
	})
}

var itoa = strconv.Itoa

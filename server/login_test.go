package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/certs"
	"kvpn/ktlsbridge"
	"kvpn/record"
)

// loginServer is a Server with a certificate, a password file (alice,
// "secret") and no TUN device, serving handleConn on a loopback listener.
type loginServer struct {
	*Server
	addr string
	// read counts the bytes the server read from all its connections.
	read atomic.Int64
}

func newLoginServer(t *testing.T, edit func(*Config)) *loginServer {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	cfg.KTLS = string(ktlsbridge.ModeOff)
	if edit != nil {
		edit(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := auth.SetPassword(filepath.Join(dir, "passwd"), "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	s := newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.ReloadPasswd(); err != nil {
		t.Fatal(err)
	}
	if err := s.loadTickets(); err != nil {
		t.Fatal(err)
	}
	cert, _, err := certs.LoadOrCreate(cfg.ServerCert, cfg.ServerKey, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	s.tlsCfg = record.BaseConfig()
	s.tlsCfg.Certificates = []tls.Certificate{cert}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &loginServer{Server: s, addr: ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.handleConn(ctx, &countConn{Conn: c, n: &ls.read})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		for _, sess := range s.list() {
			sess.end("test over")
		}
		wg.Wait()
	})
	return ls
}

// countConn counts the bytes read from a connection.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// dialTLS opens a TLS connection to the server from the local address
// from ("" for any).
func (ls *loginServer) dialTLS(t *testing.T, from string) *tls.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	raw, err := d.Dial("tcp", ls.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.Handshake(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const initBody = `<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="init"><version who="vpn">9</version></config-auth>`

func replyBody(user, password string) string {
	return `<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="auth-reply"><version who="vpn">9</version><auth><username>` +
		user + `</username><password>` + password + `</password></auth></config-auth>`
}

// post writes a login POST with body and extra header lines.
func post(w io.Writer, body string, headers string) error {
	_, err := fmt.Fprintf(w, "POST / HTTP/1.1\r\nHost: vpn\r\nContent-Type: application/xml\r\n%sContent-Length: %d\r\n\r\n%s",
		headers, len(body), body)
	return err
}

// TestRequestHeadBounded: an endless header line and a head of 10,000 small
// headers each get 431 and a closed connection, and the server reads a
// bounded amount of what was sent (before the fix, it read and buffered
// the endless line until the login deadline).
func TestRequestHeadBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(w io.Writer) error
		want  int
	}{
		{"endless header line", func(w io.Writer) error {
			if _, err := io.WriteString(w, "POST / HTTP/1.1\r\nHost: vpn\r\nX-Endless: "); err != nil {
				return err
			}
			chunk := []byte(strings.Repeat("a", 16<<10))
			for range 256 { // 4 MiB
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}, http.StatusRequestHeaderFieldsTooLarge},
		{"10000 headers", func(w io.Writer) error {
			var b strings.Builder
			for i := range 10000 {
				fmt.Fprintf(&b, "X-H%d: v\r\n", i)
			}
			return post(w, initBody, b.String())
		}, http.StatusRequestHeaderFieldsTooLarge},
		{"endless request line", func(w io.Writer) error {
			io.WriteString(w, "POST /")
			chunk := []byte(strings.Repeat("a", 16<<10))
			for range 256 {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}, http.StatusRequestURITooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := newLoginServer(t, nil)
			c := ls.dialTLS(t, "")
			c.SetDeadline(time.Now().Add(8 * time.Second))
			go tc.write(c)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			// The server closes: the next read ends.
			if _, err := io.Copy(io.Discard, c); err != nil && !isClosed(err) {
				t.Fatalf("connection not closed: %v", err)
			}
			if n := ls.read.Load(); n > 256<<10 {
				t.Errorf("server read %d bytes of a 4 MiB head", n)
			}
			if got := ls.Snapshot().Drops["request-too-large"]; got != 1 {
				t.Errorf("request-too-large = %d, want 1", got)
			}
		})
	}
}

func isClosed(err error) bool {
	s := err.Error()
	return strings.Contains(s, "reset") || strings.Contains(s, "broken pipe") || strings.Contains(s, "closed")
}

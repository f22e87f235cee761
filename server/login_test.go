package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
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

func newLoginServer(t testing.TB, edit func(*Config)) *loginServer {
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
	s := newTableServer(t, cfg)
	cert, _, err := certs.LoadOrCreate(cfg.ServerCert, cfg.ServerKey, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	s.tlsCfg = record.BaseConfig()
	s.tlsCfg.Certificates = []tls.Certificate{cert}
	if cfg.certAuth() {
		set, err := BuildSettings(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.settings.Store(set)
		s.setupClientAuth(s.tlsCfg, set)
	}
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

func isClosed(err error) bool {
	s := err.Error()
	return strings.Contains(s, "reset") || strings.Contains(s, "broken pipe") || strings.Contains(s, "closed")
}

// tryLogin logs in over a fresh TLS connection from the local address
// from and returns the answer's body and Set-Cookie.
func (ls *loginServer) tryLogin(from, user, password string) (body, cookie string, err error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", ls.addr)
	if err != nil {
		return "", "", err
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := post(c, replyBody(user, password), ""); err != nil {
		return "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", "", err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), resp.Header.Get("Set-Cookie"), nil
}

// countVerify replaces the server's password check with one that counts
// calls, the most running at once, and takes d; it answers good.
type verifyCounter struct {
	calls, now, peak atomic.Int64
}

func (ls *loginServer) countVerify(d time.Duration, good func(user, password string) bool) *verifyCounter {
	vc := &verifyCounter{}
	ls.verify = func(user, password string) bool {
		vc.calls.Add(1)
		n := vc.now.Add(1)
		for {
			old := vc.peak.Load()
			if n <= old || vc.peak.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(d)
		vc.now.Add(-1)
		return good(user, password)
	}
	return vc
}

func never(string, string) bool { return false }

// parallelLogins runs n logins at once; user(i) names the i-th user.
func (ls *loginServer) parallelLogins(t *testing.T, n int, from string, user func(int) string) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Go(func() {
			if _, _, err := ls.tryLogin(from, user(i), "wrong"); err != nil {
				if failed.Add(1) == 1 {
					t.Errorf("login %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
}

func (ls *loginServer) loginConnsNow() int {
	ls.loginConns.mu.Lock()
	defer ls.loginConns.mu.Unlock()
	return ls.loginConns.total
}

func (ls *loginServer) loginConnsPending() int {
	ls.loginConns.mu.Lock()
	defer ls.loginConns.mu.Unlock()
	return ls.loginConns.pending.Len()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLoginCookieNamesAddress: the cookie a login answers with names the
// address reserved for the session, so a client that only has that cookie
// (stock openconnect does not read the renewed one) resumes with its
// address on a restarted node, where X-CSTP-Address alone no longer
// chooses one (TestRequestedAddressNotChosen).
func TestLoginCookieNamesAddress(t *testing.T) {
	ls := newLoginServer(t, nil)
	_, setCookie, err := ls.tryLogin("127.0.0.1", "alice", "secret")
	if err != nil || setCookie == "" {
		t.Fatalf("login: %v", err)
	}
	value := strings.TrimPrefix(strings.Split(setCookie, ";")[0], "webvpn=")
	tk, sess, err := ls.openTicket(value, "")
	if err != nil || sess == nil {
		t.Fatalf("opening the login cookie: %v", err)
	}
	sess.mu.Lock()
	addr := sess.addr
	sess.mu.Unlock()
	if !addr.IsValid() || tk.Addr4 != addr {
		t.Fatalf("login cookie names address %s, the session holds %s", tk.Addr4, addr)
	}
}

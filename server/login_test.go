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
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/certs"
	"kvpn/internal/harness"
	"kvpn/ktlsbridge"
	"kvpn/record"
	"kvpn/record/recordtest"
	"kvpn/session"
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

// TestParallelWrongLoginsBounded: 200 parallel wrong logins (for 200
// users) from one address, and 150 parallel guesses at one user from one
// new address, reach the password check only as often as the throttle's
// free failures allow (before the fix, every one of them was verified);
// the checks that run never exceed the verification pool's size.
func TestParallelWrongLoginsBounded(t *testing.T) {
	// Bans off: this is the throttle's and the pool's test.
	ls := newLoginServer(t, func(c *Config) { c.MaxLoginConnectionsPerIP = 0; c.MaxBanScore = 0 })
	vc := ls.countVerify(20*time.Millisecond, never)
	// Three free failures, then one more per doubling delay (1s, 2s...)
	// for as long as the logins take: a handful on a slow machine.
	const handful = 6
	ls.parallelLogins(t, 200, "127.0.0.1", func(i int) string { return fmt.Sprintf("user%d", i) })
	first := vc.calls.Load()
	if first > handful {
		t.Errorf("200 parallel wrong logins from one address: %d verifications", first)
	}
	ls.parallelLogins(t, 150, "127.0.0.2", func(int) string { return "alice" })
	if n := vc.calls.Load() - first; n > handful {
		t.Errorf("150 parallel guesses at one user from a new address: %d verifications", n)
	}
	if p := vc.peak.Load(); p > int64(ls.verifyPool.Size()) {
		t.Errorf("%d verifications at once, pool of %d", p, ls.verifyPool.Size())
	}
	if snap := ls.Snapshot(); snap.LoginThrottled < 300 {
		t.Errorf("login throttled %d, want at least 300", snap.LoginThrottled)
	}
}

// TestVerifyPoolServerBound: with the throttle out of the way (every
// login from its own address), parallel logins still verify at most the
// pool's size at a time, and those the queue cannot hold are told the
// server is busy, not counted as failures.
func TestVerifyPoolServerBound(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) { c.MaxLoginConnectionsPerIP = 0; c.MaxBanScore = 0 })
	ls.verifyPool = auth.NewVerifyPool(2, 2, 50*time.Millisecond)
	vc := ls.countVerify(30*time.Millisecond, never)
	var wg sync.WaitGroup
	var busy atomic.Int64
	for i := range 40 {
		wg.Go(func() {
			body, _, err := ls.tryLogin(fmt.Sprintf("127.0.1.%d", i+1), "alice", "wrong")
			if err != nil {
				t.Errorf("login %d: %v", i, err)
			}
			if strings.Contains(body, "Server busy") {
				busy.Add(1)
			}
		})
	}
	wg.Wait()
	if p := vc.peak.Load(); p > 2 {
		t.Errorf("%d verifications at once in a pool of 2", p)
	}
	snap := ls.Snapshot()
	if busy.Load() == 0 || snap.Drops["login-busy"] != uint64(busy.Load()) {
		t.Errorf("busy answers %d, login-busy %d", busy.Load(), snap.Drops["login-busy"])
	}
	if snap.LoginFailures != uint64(vc.calls.Load()) {
		t.Errorf("failures %d, verifications %d: a busy answer counted as a failure", snap.LoginFailures, vc.calls.Load())
	}
}

// TestLongPasswordRefusedUnhashed: a 60 KB password is a failed login
// with a clear message, answered at once without a verification.
func TestLongPasswordRefusedUnhashed(t *testing.T) {
	ls := newLoginServer(t, nil)
	vc := ls.countVerify(0, func(u, p string) bool { return ls.currentSettings().Passwd.Verify(u, p) })
	start := time.Now()
	body, _, err := ls.tryLogin("127.0.0.1", "alice", strings.Repeat("p", 60<<10))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "too long") {
		t.Errorf("answer does not say why: %s", body)
	}
	if vc.calls.Load() != 0 || time.Since(start) > 2*time.Second {
		t.Errorf("%d verifications, %v", vc.calls.Load(), time.Since(start))
	}
	if snap := ls.Snapshot(); snap.LoginFailures != 1 || snap.Drops["credentials-too-long"] != 1 {
		t.Errorf("failures %d, credentials-too-long %d", snap.LoginFailures, snap.Drops["credentials-too-long"])
	}
}

// TestNoTargetedLockout: while a guesser at alice is throttled, alice's
// correct password from another address succeeds (before the fix, three
// failures anywhere refused her everywhere).
func TestNoTargetedLockout(t *testing.T) {
	ls := newLoginServer(t, nil)
	for range 5 {
		if _, _, err := ls.tryLogin("127.0.0.3", "alice", "guess"); err != nil {
			t.Fatal(err)
		}
	}
	if ls.Snapshot().LoginThrottled == 0 {
		t.Fatal("the guesser was not throttled")
	}
	body, cookie, err := ls.tryLogin("127.0.0.4", "alice", "secret")
	if err != nil || cookie == "" {
		t.Fatalf("alice refused from another address: %v %s", err, body)
	}
}

// TestBannedAddressRefused: an address past max-ban-score is refused
// before the TLS handshake; another address is not.
func TestBannedAddressRefused(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) { c.BanPointsWrongPassword = 40 })
	// One user's failures count at most max-ban-score/2: two names ban.
	for _, u := range []string{"alice", "mallory"} {
		if _, _, err := ls.tryLogin("127.0.0.5", u, "guess"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := ls.tryLogin("127.0.0.5", "alice", "secret"); err == nil {
		t.Fatal("banned address logged in")
	}
	if n := ls.Snapshot().Drops["login-banned"]; n != 1 {
		t.Errorf("login-banned %d, want 1", n)
	}
	if _, cookie, err := ls.tryLogin("127.0.0.6", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("another address refused: %v", err)
	}
}

// TestMaxSameClients: one user's logins stop at max-same-clients, and
// max-clients stops the total; a session that ends frees its place.
func TestMaxSameClients(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) { c.MaxSameClients = 2 })
	ls.countVerify(0, func(u, p string) bool { return p == "secret" })
	for i := range 2 {
		if _, cookie, err := ls.tryLogin("127.0.0.1", "alice", "secret"); err != nil || cookie == "" {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	// Neither session has connected: a third login takes the place of
	// the oldest (a client that crashed must not lock its user out).
	oldest := ls.list()[0]
	for _, sess := range ls.list() {
		if sess.id < oldest.id {
			oldest = sess
		}
	}
	if _, cookie, err := ls.tryLogin("127.0.0.1", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("3rd login with two unconnected sessions: %v", err)
	}
	oldest.mu.Lock()
	ended := oldest.ended
	oldest.mu.Unlock()
	if !ended || len(ls.list()) != 2 {
		t.Fatalf("oldest unconnected session ended %v, %d sessions, want true and 2", ended, len(ls.list()))
	}
	// Both connected: the next login is refused.
	for _, sess := range ls.list() {
		_, server := recordtest.Pair(t, 0)
		ch, err := session.NewCSTPChannel(server, session.NewFrameReader(server), 1400)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sess.attach(ch, netip.Addr{}, netip.Prefix{}); err != nil {
			t.Fatal(err)
		}
	}
	body, cookie, err := ls.tryLogin("127.0.0.1", "alice", "secret")
	if err != nil || cookie != "" || !strings.Contains(body, "max-same-clients") {
		t.Fatalf("3rd session of alice: %v, cookie %q, %s", err, cookie, body)
	}
	if n := ls.Snapshot().Drops["session-limit"]; n != 1 {
		t.Errorf("session-limit %d, want 1", n)
	}
	ls.list()[0].end("test")
	if _, cookie, err := ls.tryLogin("127.0.0.1", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("login after a session ended: %v", err)
	}
}

func TestMaxClients(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) { c.MaxClients = 3; c.MaxSameClients = 0 })
	ls.countVerify(0, func(u, p string) bool { return p == "secret" })
	for i := range 3 {
		if _, cookie, err := ls.tryLogin("127.0.0.1", fmt.Sprintf("u%d", i), "secret"); err != nil || cookie == "" {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	body, cookie, err := ls.tryLogin("127.0.0.1", "u9", "secret")
	if err != nil || cookie != "" || !strings.Contains(body, "max-clients") {
		t.Fatalf("4th session: %v, cookie %q, %s", err, cookie, body)
	}
}

// TestLoginConnectionBound: idle TLS connections from one address, past
// their handshake, stop at max-login-connections-per-ip (the next is
// closed at once), another
// address still logs in, and max-login-connections bounds them all.
func TestLoginConnectionBound(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) { c.MaxLoginConnectionsPerIP = 4; c.MaxLoginConnections = 6 })
	for range 4 {
		ls.dialTLS(t, "127.0.0.7")
	}
	// Only connections past their handshake (on the server's side too)
	// hold their place; one still in it would be closed for the newcomer.
	waitFor(t, func() bool { return ls.loginConnsNow() == 4 && ls.loginConnsPending() == 0 })
	start := time.Now()
	if _, _, err := ls.tryLogin("127.0.0.7", "alice", "secret"); err == nil {
		t.Fatal("5th connection from one address served")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if _, cookie, err := ls.tryLogin("127.0.0.8", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("another address refused: %v", err)
	}
	// A closed connection gives its place back, and the total holds.
	waitFor(t, func() bool { return ls.loginConnsNow() == 4 })
	ls.dialTLS(t, "127.0.0.9")
	ls.dialTLS(t, "127.0.0.9")
	waitFor(t, func() bool { return ls.loginConnsNow() == 6 && ls.loginConnsPending() == 0 })
	if _, _, err := ls.tryLogin("127.0.0.10", "alice", "secret"); err == nil {
		t.Fatal("connection past max-login-connections served")
	}
	if n := ls.Snapshot().Drops["login-conn-limit"]; n != 2 {
		t.Errorf("login-conn-limit %d, want 2", n)
	}
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

// emfileListener fails its first n Accepts with EMFILE, then accepts from
// the real listener.
type emfileListener struct {
	net.Listener
	n atomic.Int64
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptBackoff: a listener out of file descriptors costs one log
// line, backs off instead of spinning, and serving goes on after.
func TestAcceptBackoff(t *testing.T) {
	var logs harness.Output
	s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil))}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &emfileListener{Listener: inner}
	ln.n.Store(8) // 5+10+...+640 ms of backoff
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	served := make(chan struct{}, 1)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		s.acceptLoop(ctx, ln, &wg, func(c net.Conn) { c.Close(); served <- struct{}{} })
		close(done)
	}()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("not serving after the errors")
	}
	if d := time.Since(start); d < 1200*time.Millisecond {
		t.Errorf("8 failures took only %v: no backoff", d)
	}
	cancel()
	inner.Close()
	<-done
	wg.Wait()
	if n := strings.Count(logs.String(), "accept failed"); n != 1 {
		t.Errorf("%d log lines for 8 failures, want 1:\n%s", n, logs.String())
	}
	if n := s.Counters.AcceptErrors.Load(); n != 8 {
		t.Errorf("accept-error %d, want 8", n)
	}
}

// TestParallelLoginsBehindNAT: several users logging in at once from one
// address all get in; the ones beyond the throttle's free slots wait for
// the attempts in flight instead of being told to retry.
func TestParallelLoginsBehindNAT(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) { c.MaxSameClients = 0 })
	ls.countVerify(30*time.Millisecond, func(u, p string) bool { return p == "secret" })
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if body, cookie, err := ls.tryLogin("127.0.0.11", fmt.Sprintf("user%d", i), "secret"); err != nil || cookie == "" {
				t.Errorf("user%d: %v %s", i, err, body)
			}
		})
	}
	wg.Wait()
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

// TestLoginStormBehindNAT: stormUsers users logging in at once from one
// address, with the default limits, all get in (before, the 65th and
// later connections were closed at once by max-login-connections-per-ip).
func TestLoginStormBehindNAT(t *testing.T) {
	ls := newStormServer(t, "")
	ls.countVerify(2*time.Millisecond, func(u, p string) bool { return p == "secret" })
	ls.storm(t, "127.0.0.12")
	if snap := ls.Snapshot(); snap.Drops["login-conn-limit"] != 0 || snap.Drops["login-busy"] != 0 || snap.LoginThrottled != 0 {
		t.Errorf("correct logins held back: %v, throttled %d", snap.Drops, snap.LoginThrottled)
	}
}

// TestLoginStormManyAddresses: stormUsers users logging in at once from
// as many addresses all get in: the verification pool's queue holds a
// storm (before, it held 8 waiters and told the rest "Server busy").
func TestLoginStormManyAddresses(t *testing.T) {
	ls := newStormServer(t, "")
	ls.countVerify(5*time.Millisecond, func(u, p string) bool { return p == "secret" })
	var wg sync.WaitGroup
	for i := range stormUsers {
		wg.Go(func() {
			from := fmt.Sprintf("127.0.%d.%d", 20+i/250, 1+i%250)
			if body, cookie, err := ls.tryLogin(from, fmt.Sprintf("user%d", i), "secret"); err != nil || cookie == "" {
				t.Errorf("user%d: %v %.100s", i, err, body)
			}
		})
	}
	wg.Wait()
	if n := ls.Snapshot().Drops["login-busy"]; n != 0 {
		t.Errorf("login-busy %d", n)
	}
}

// TestSlowLoginsBehindNATWait: correct logins from one address that wait
// longer than a few seconds for the ones before them (slow hashes, a
// loaded server) still get in rather than being refused as throttled
// (before, a login held more than 5 s by attempts in flight was).
func TestSlowLoginsBehindNATWait(t *testing.T) {
	ls := newStormServer(t, "")
	ls.countVerify(400*time.Millisecond, func(u, p string) bool { return p == "secret" })
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if body, cookie, err := ls.tryLogin("127.0.0.13", fmt.Sprintf("user%d", i), "secret"); err != nil || cookie == "" {
				t.Errorf("user%d: %v %.100s", i, err, body)
			}
		})
	}
	wg.Wait()
	if n := ls.Snapshot().LoginThrottled; n != 0 {
		t.Errorf("%d correct logins refused as throttled", n)
	}
}

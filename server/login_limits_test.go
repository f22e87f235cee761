package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/harness"
	"kvpn/record/recordtest"
	"kvpn/session"
)

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

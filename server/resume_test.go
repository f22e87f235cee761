package server

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/netcfg"
)

// newResumeServer is a Server with everything sessionFor needs and no
// TUN device: key file in a temp dir, a password file with alice and a
// locked bob.
func newResumeServer(t *testing.T, dir string, pool string) *Server {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.IPv4Network = pool
	cfg.CookieTimeout = 60
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "passwd")
	if _, err := os.Stat(pw); err != nil {
		if err := auth.SetPassword(pw, "alice", "secret"); err != nil {
			t.Fatal(err)
		}
		if err := auth.SetPassword(pw, "bob", "secret"); err != nil {
			t.Fatal(err)
		}
	}
	return newTableServer(t, cfg)
}

// newTableServer is a Server with cfg's policy, password file and cookie
// key loaded, and no TUN device or sockets (kernel routes are not
// installed).
func newTableServer(t testing.TB, cfg *Config) *Server {
	t.Helper()
	s := newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.addRoute = func(netip.Prefix) (*netcfg.Changes, error) { return netcfg.New(), nil }
	s.polMu.Lock()
	err := s.applyPolicy(cfg.pol)
	s.polMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadPasswd(); err != nil {
		t.Fatal(err)
	}
	if err := s.loadTickets(); err != nil {
		t.Fatal(err)
	}
	return s
}

// login creates a session the way handleAuth does and returns its cookie.
func login(t *testing.T, s *Server, user string) (*Session, string) {
	t.Helper()
	sess := s.newSession(user, netip.Addr{})
	c, err := s.cookies.Issue(sess, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sess.cookie = c
	text, err := s.sealTicket(sess)
	if err != nil {
		t.Fatal(err)
	}
	return sess, text
}

func TestResumeOnAnotherNode(t *testing.T) {
	dir := t.TempDir()
	a := newResumeServer(t, dir, "10.77.0.0/24")
	b := newResumeServer(t, dir, "10.78.0.0/24") // same key file, other pool
	sessA, cookie := login(t, a, "alice")
	sessA.addr = netip.MustParseAddr("10.77.0.5")
	cookie, _ = a.sealTicket(sessA) // as sent with the CONNECT answer
	log := a.log

	// Node A holds it: found in memory.
	got, _, _, err := a.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", log)
	if err != nil || got != sessA {
		t.Fatalf("node A: %v, %v", got, err)
	}
	// Node B resumes it: a new session for the same user and identity; the
	// cookie's address is outside B's pool, so B's pool picks one.
	got, want, _, err := b.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if got.user != "alice" || got.cookie != sessA.cookie || want != sessA.addr {
		t.Fatalf("resumed %q %x want %s", got.user, got.cookie, want)
	}
	if addr, _ := b.pool.Get(want); !netip.MustParsePrefix("10.78.0.0/24").Contains(addr) {
		t.Fatalf("address %s not from node B's pool", addr)
	}
	// A second CONNECT with the cookie finds the resumed session.
	again, _, _, err := b.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", log)
	if err != nil || again != got {
		t.Fatalf("second CONNECT on B: %p %v, want %p", again, err, got)
	}
	// A restarted node A (new Server, same key file) resumes it too, and
	// the address in the cookie is honoured there.
	a2 := newResumeServer(t, dir, "10.77.0.0/24")
	r, want, _, err := a2.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", log)
	if err != nil || r.user != "alice" {
		t.Fatalf("restarted A: %v", err)
	}
	if addr, _ := a2.pool.Get(want); addr != sessA.addr {
		t.Fatalf("restarted A gave %s, want the cookie's %s", addr, sessA.addr)
	}
}

// TestExpiredSessionEndsOnResume: a detached session whose cookie-timeout
// passed, met by a CONNECT before the sweep, ends there (address freed,
// cookie refused as the sweep would have it) instead of staying beside a
// resumed copy for ever.
func TestExpiredSessionEndsOnResume(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	now := time.Now()
	s.cookies = auth.NewCookieJar[*Session](func() time.Time { return now })
	sess, cookie := login(t, s, "alice")
	addr, err := s.pool.Get(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	sess.addr = addr
	s.byAddr[addr] = sess
	now = now.Add(2 * time.Minute) // past the jar's 1 minute; the ticket lives on
	_, _, _, err = s.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", s.log)
	if !errors.Is(err, errRevoked) {
		t.Fatalf("CONNECT with the expired session's cookie: %v, want errRevoked", err)
	}
	s.mu.RLock()
	n, holder := len(s.sessions), s.byAddr[addr]
	s.mu.RUnlock()
	if !sess.ended || n != 0 || holder != nil {
		t.Fatalf("ended %v, %d sessions, %s held by %p", sess.ended, n, addr, holder)
	}
	if got := s.cookies.Sweep(); len(got) != 0 {
		t.Fatalf("the sweep still finds %d sessions", len(got))
	}
}

func TestResumeRefused(t *testing.T) {
	dir := t.TempDir()
	a := newResumeServer(t, dir, "10.77.0.0/24")
	b := newResumeServer(t, dir, "10.78.0.0/24")
	log := a.log
	connect := func(s *Server, c string) error {
		_, _, _, err := s.sessionFor(&cstp.ConnectRequest{Cookie: c}, netip.Addr{}, "", log)
		return err
	}
	sess, cookie := login(t, a, "alice")

	// Tampered: one character changed.
	i := len(cookie) / 2
	ch := byte('A')
	if cookie[i] == 'A' {
		ch = 'B'
	}
	if err := connect(b, cookie[:i]+string(ch)+cookie[i+1:]); !errors.Is(err, auth.ErrTicketForged) {
		t.Errorf("tampered: %v", err)
	}
	if err := connect(b, cookie[:40]); !errors.Is(err, auth.ErrTicketMalformed) {
		t.Errorf("truncated: %v", err)
	}
	if err := connect(b, strings.Repeat("ab", 32)); !errors.Is(err, auth.ErrTicketMalformed) {
		t.Errorf("old-style cookie: %v", err)
	}
	// Another key: a node outside the cluster.
	other := newResumeServer(t, t.TempDir(), "10.79.0.0/24")
	if err := connect(other, cookie); !errors.Is(err, auth.ErrTicketForged) {
		t.Errorf("other key: %v", err)
	}

	// A user deleted since the login.
	_, bobCookie := login(t, a, "bob")
	if err := auth.DeleteUser(filepath.Join(dir, "passwd"), "bob"); err != nil {
		t.Fatal(err)
	}
	b.ReloadPasswd()
	if err := connect(b, bobCookie); !errors.Is(err, errUserGone) {
		t.Errorf("deleted user: %v", err)
	}

	// Expired.
	tk, _ := a.tickets.OpenTicket(cookie)
	tk.Issued, tk.Expires = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
	stale, _ := a.tickets.Seal(tk)
	if err := connect(b, stale); !errors.Is(err, auth.ErrTicketExpired) {
		t.Errorf("expired: %v", err)
	}

	// Logout on A: revoked on A (also after the session is gone from the
	// jar), not on B, which was not told (docs/scaling.md).
	sess.end("logout")
	if err := connect(a, cookie); !errors.Is(err, errRevoked) {
		t.Errorf("after logout on A: %v", err)
	}
	if err := connect(b, cookie); err != nil {
		t.Errorf("B does not know of the logout, want resume: %v", err)
	}
	// A shutdown does not revoke.
	s2, c2 := login(t, a, "alice")
	s2.end(cstp.ReasonServerShutdown)
	if err := connect(a, c2); err != nil {
		t.Errorf("after shutdown: %v", err)
	}
}

// TestRequestedAddressNotChosen: X-CSTP-Address on a first CONNECT does
// not let a client pick any free address; only the address its session
// or resumed ticket already held is honoured.
func TestRequestedAddressNotChosen(t *testing.T) {
	dir := t.TempDir()
	s := newResumeServer(t, dir, "10.77.0.0/24")
	chosen := netip.MustParseAddr("10.77.0.50")
	for _, user := range []string{"alice", "bob"} {
		_, cookie := login(t, s, user)
		sess, want, _, err := s.sessionFor(&cstp.ConnectRequest{Cookie: cookie, PrevAddress: chosen}, netip.Addr{}, "", s.log)
		if err != nil {
			t.Fatal(err)
		}
		a, err := sess.attach(nil, want, netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		if a == chosen {
			t.Fatalf("fresh login of %s got the address it asked for (%s)", user, a)
		}
	}
	// A session that held an address keeps it when it reconnects, on this
	// node (in memory) and on a restarted one (from its ticket).
	sess, cookie := login(t, s, "alice")
	a, err := sess.attach(nil, netip.Addr{}, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	cookie, _ = s.sealTicket(sess)
	again, want, _, err := s.sessionFor(&cstp.ConnectRequest{Cookie: cookie, PrevAddress: a}, netip.Addr{}, "", s.log)
	if err != nil || again != sess {
		t.Fatalf("reconnect: %v", err)
	}
	if got, _ := again.attach(nil, want, netip.Prefix{}); got != a {
		t.Fatalf("reconnect got %s, want %s", got, a)
	}
	s2 := newResumeServer(t, dir, "10.77.0.0/24")
	r, want, _, err := s2.sessionFor(&cstp.ConnectRequest{Cookie: cookie, PrevAddress: a}, netip.Addr{}, "", s.log)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.attach(nil, want, netip.Prefix{}); got != a {
		t.Fatalf("resumed session got %s, want its ticket's %s", got, a)
	}
	// A resumed ticket asking for another address than its own gets its own.
	other := netip.MustParseAddr("10.77.0.60")
	s3 := newResumeServer(t, dir, "10.77.0.0/24")
	r, want, _, err = s3.sessionFor(&cstp.ConnectRequest{Cookie: cookie, PrevAddress: other}, netip.Addr{}, "", s.log)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.attach(nil, want, netip.Prefix{}); got == other {
		t.Fatalf("resumed session got the foreign address %s it asked for", got)
	}
}

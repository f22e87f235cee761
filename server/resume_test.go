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

// TestRevocationOutlivesOtherNodesCookies: a session this node last sealed
// a cookie for long ago may hold a fresher one from another node (a
// refresh answered there); kicking it here revokes it for a whole ticket
// lifetime from now, not only until this node's own cookie expires.
func TestRevocationOutlivesOtherNodesCookies(t *testing.T) {
	s := newResumeServer(t, t.TempDir(), "10.77.0.0/24")
	sess, _ := login(t, s, "alice")
	sess.mu.Lock()
	sess.ticketExpires = time.Now().Add(time.Second) // this node's cookie
	sess.mu.Unlock()
	s.revokeSession(sess)
	s.revoked.Sweep(time.Now().Add(s.ticketLifetime() - time.Second))
	if !s.revoked.Has(sess.cookie) {
		t.Fatal("the revocation ended with this node's own cookie")
	}
	s.revoked.Sweep(time.Now().Add(s.ticketLifetime() + time.Second))
	if s.revoked.Has(sess.cookie) {
		t.Fatal("the revocation outlived every possible cookie")
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

// TestSessionTimeout: a ticket carries its login time through refreshes;
// once session-timeout has passed since the login, resume and refresh are
// refused on every node and the live session ends at the next sweep.
func TestSessionTimeout(t *testing.T) {
	dir := t.TempDir()
	a := newResumeServer(t, dir, "10.77.0.0/24")
	b := newResumeServer(t, dir, "10.78.0.0/24")
	sess, _ := login(t, a, "alice")
	// Logged in 23 h ago (session-timeout defaults to 24 h) and
	// refreshed since: the refreshed cookie keeps the login time.
	sess.login = time.Now().Add(-23 * time.Hour).Truncate(time.Second)
	cookie, _ := a.sealTicket(sess)
	tk, sessB, err := b.openTicket(cookie, "")
	if err != nil || sessB != nil {
		t.Fatalf("within session-timeout: %v", err)
	}
	refreshed, err := b.seal(nil, tk) // what handleRefresh on B answers
	if err != nil {
		t.Fatal(err)
	}
	if tk2, err := a.tickets.OpenTicket(refreshed); err != nil || !tk2.Login.Equal(sess.login) {
		t.Fatalf("refresh changed the login time: %v %v, want %v", tk2.Login, err, sess.login)
	}
	// Past it: 25 h since the login.
	sess.login = time.Now().Add(-25 * time.Hour)
	old, _ := a.sealTicket(sess)
	if _, _, err := b.openTicket(old, ""); !errors.Is(err, errSessionTimeout) {
		t.Fatalf("resume past session-timeout: %v", err)
	}
	if got := b.Snapshot().Drops["session-timeout"]; got != 1 {
		t.Fatalf("session-timeout counter %d", got)
	}
	a.sweepOnce(time.Now())
	if !sess.ended {
		t.Fatal("the live session outlived session-timeout")
	}
	if _, _, err := a.openTicket(old, ""); err == nil {
		t.Fatal("cookie of the ended session accepted")
	}
	// 0 is unlimited, as in ocserv.
	a.cfg.SessionTimeout = 0
	s2, _ := login(t, a, "alice")
	s2.login = time.Now().Add(-1000 * time.Hour)
	a.sweepOnce(time.Now())
	if s2.ended {
		t.Fatal("session-timeout 0 ended a session")
	}
}

// lockUser locks user in the password file as ocpasswd -l does: "!"
// before the hash.
func lockUser(t *testing.T, path, user string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if f := strings.Split(l, ":"); len(f) == 3 && f[0] == user {
			l = f[0] + ":" + f[1] + ":!" + f[2]
		}
		out = append(out, l)
	}
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLockedUserSessionEnds: locking (or deleting, or changing) a user in
// the password file ends their live session at the reload, and their
// cookie is refused here and on a second node sharing the key and file.
func TestLockedUserSessionEnds(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	a := newResumeServer(t, dir, "10.77.0.0/24")
	b := newResumeServer(t, dir, "10.78.0.0/24")
	sess, cookie := login(t, a, "alice")
	if _, err := sess.attach(nil, netip.Addr{}, netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	bobSess, bobCookie := login(t, a, "bob")
	lockUser(t, pw, "alice")
	if err := a.ReloadPasswd(); err != nil {
		t.Fatal(err)
	}
	if err := b.ReloadPasswd(); err != nil {
		t.Fatal(err)
	}
	if !sess.ended {
		t.Fatal("the locked user's session survived the reload")
	}
	if bobSess.ended {
		t.Fatal("another user's session ended")
	}
	a.mu.RLock()
	n := len(a.byAddr)
	a.mu.RUnlock()
	if n != 0 {
		t.Fatalf("the ended session still holds its address (%d)", n)
	}
	for name, s := range map[string]*Server{"A": a, "B": b} {
		if _, _, _, err := s.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", s.log); err == nil {
			t.Errorf("node %s resumed the locked user's cookie", name)
		}
	}
	// A new password is a new generation: the old cookie is refused on
	// B, which did not hold the session.
	if err := auth.SetPassword(pw, "bob", "new-secret"); err != nil {
		t.Fatal(err)
	}
	b.ReloadPasswd()
	if _, _, _, err := b.sessionFor(&cstp.ConnectRequest{Cookie: bobCookie}, netip.Addr{}, "", b.log); !errors.Is(err, errUserChanged) {
		t.Errorf("cookie from before a password change: %v", err)
	}
	if got := b.Snapshot().Drops["user-changed"]; got == 0 {
		t.Error("user-changed counter not counted")
	}
}

// TestRevocationSurvivesRestart: a logged-out cookie stays refused by a
// new server instance on the same state directory (a restart).
func TestRevocationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	a := newResumeServer(t, dir, "10.77.0.0/24")
	sess, cookie := login(t, a, "alice")
	_, kept := login(t, a, "alice")
	sess.end("logout")
	a2 := newResumeServer(t, dir, "10.77.0.0/24") // vpnd restarted
	if _, _, _, err := a2.sessionFor(&cstp.ConnectRequest{Cookie: cookie}, netip.Addr{}, "", a2.log); !errors.Is(err, errRevoked) {
		t.Fatalf("logged-out cookie after a restart: %v, want errRevoked", err)
	}
	if _, _, _, err := a2.sessionFor(&cstp.ConnectRequest{Cookie: kept}, netip.Addr{}, "", a2.log); err != nil {
		t.Fatalf("another session's cookie after a restart: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, revokedFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("revoked sessions file: %v, mode %v", err, st.Mode())
	}
	// Swept once every cookie naming it has expired, in the file too.
	a2.sweepOnce(time.Now().Add(2 * a2.ticketLifetime()))
	a3 := newResumeServer(t, dir, "10.77.0.0/24")
	if n := a3.revoked.Len(); n != 0 {
		t.Fatalf("%d expired revocations loaded", n)
	}
}

// TestSessionTimeoutConfig: session-timeout defaults to a day, 0 is
// accepted (unlimited), a negative value is refused naming the key.
func TestSessionTimeoutConfig(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "mtu = 1400\n"), "/state")
	if err != nil || cfg.sessionTimeout() != 24*time.Hour {
		t.Fatalf("default: %v, %v", cfg.sessionTimeout(), err)
	}
	if cfg, err := LoadConfig(writeConfig(t, "session-timeout = 0\n"), "/state"); err != nil || cfg.sessionTimeout() != 0 {
		t.Fatalf("0: %v", err)
	}
	if _, err := LoadConfig(writeConfig(t, "session-timeout = -1\n"), "/state"); err == nil || !strings.Contains(err.Error(), "session-timeout:") {
		t.Fatalf("negative: %v", err)
	}
}

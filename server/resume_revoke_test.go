package server

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
)

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

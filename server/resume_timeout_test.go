package server

import (
	"errors"
	"strings"
	"testing"
	"time"
)

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

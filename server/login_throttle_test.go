package server

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/auth"
)

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

package server

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

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

package auth

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCookieString(t *testing.T) {
	c, err := NewCookie()
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	if len(s) != 64 || strings.ToLower(s) != s {
		t.Fatalf("String() = %q, want 64 lowercase hex digits", s)
	}
	back, err := ParseCookie(s)
	if err != nil || back != c {
		t.Fatalf("ParseCookie(String()) = %x, %v", back, err)
	}
	if c2, _ := NewCookie(); c2 == c {
		t.Error("two new cookies are equal")
	}
	var zero Cookie
	if zero.String() != strings.Repeat("0", 64) {
		t.Errorf("zero cookie = %q", zero.String())
	}
}

func TestParseCookieStrict(t *testing.T) {
	ok := strings.Repeat("0123456789abcdef", 4)
	if _, err := ParseCookie(ok); err != nil {
		t.Fatalf("ParseCookie(%q) = %v", ok, err)
	}
	for _, bad := range []string{
		"",
		ok[:63],
		ok + "0",
		ok[:62],
		strings.ToUpper(ok),
		ok[:63] + "A",
		ok[:63] + "g",
		" " + ok[1:],
		ok[:63] + "\n",
		"0x" + ok[2:],
		strings.Repeat("é", 32),
	} {
		if _, err := ParseCookie(bad); err == nil {
			t.Errorf("ParseCookie(%q) accepted", bad)
		}
	}
}

func TestCookieJar(t *testing.T) {
	clock := newFakeClock()
	j := NewCookieJar[string](clock.Now)

	a, err := j.Issue("alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := j.Issue("bob", 2*time.Minute)
	if v, ok := j.Lookup(a); !ok || v != "alice" {
		t.Fatalf("Lookup(a) = %q, %v", v, ok)
	}

	// A cookie differing in one bit is not found.
	forged := a
	forged[CookieBytes-1] ^= 1
	if _, ok := j.Lookup(forged); ok {
		t.Error("forged cookie found")
	}
	if j.Extend(forged, time.Hour) {
		t.Error("Extend of a forged cookie succeeded")
	}

	// Expiry is at exactly issue time + ttl.
	clock.Advance(time.Minute - time.Nanosecond)
	if _, ok := j.Lookup(a); !ok {
		t.Error("cookie expired early")
	}
	clock.Advance(time.Nanosecond)
	if _, ok := j.Lookup(a); ok {
		t.Error("cookie still valid at its expiry")
	}
	// The expired entry stays for Sweep (which ends its session), and
	// Expired finds it meanwhile.
	if j.Len() != 2 {
		t.Errorf("Lookup removed an expired cookie: Len = %d", j.Len())
	}
	if v, ok := j.Expired(a); !ok || v != "alice" {
		t.Errorf("Expired(a) = %v, %v", v, ok)
	}
	if _, ok := j.Expired(b); ok {
		t.Error("Expired reports a live cookie")
	}
	if j.Extend(a, time.Hour) {
		t.Error("Extend revived an expired cookie")
	}

	// Extend moves expiry to now+ttl.
	if !j.Extend(b, 5*time.Minute) {
		t.Fatal("Extend(b) failed")
	}
	clock.Advance(4 * time.Minute)
	if v, ok := j.Lookup(b); !ok || v != "bob" {
		t.Error("extended cookie expired")
	}

	j.Revoke(b)
	if _, ok := j.Lookup(b); ok {
		t.Error("revoked cookie found")
	}
	j.Revoke(b) // revoking twice is harmless
}

func TestCookieJarSweep(t *testing.T) {
	clock := newFakeClock()
	j := NewCookieJar[int](clock.Now)
	for i := range 5 {
		if _, err := j.Issue(i, time.Duration(i+1)*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got := j.Sweep(); len(got) != 0 {
		t.Errorf("Sweep with nothing expired = %v", got)
	}
	clock.Advance(3 * time.Second)
	got := j.Sweep()
	slices.Sort(got)
	if !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("Sweep = %v, want [0 1 2]", got)
	}
	if j.Len() != 2 {
		t.Errorf("Len after Sweep = %d, want 2", j.Len())
	}
}

func TestCookieJarDefaultClock(t *testing.T) {
	j := NewCookieJar[int](nil)
	c, err := j.Issue(7, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := j.Lookup(c); !ok || v != 7 {
		t.Errorf("Lookup = %d, %v", v, ok)
	}
}

func TestCookieJarConcurrent(t *testing.T) {
	clock := newFakeClock()
	j := NewCookieJar[int](clock.Now)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				c, err := j.Issue(g*1000+i, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if v, ok := j.Lookup(c); !ok || v != g*1000+i {
					t.Errorf("Lookup = %d, %v", v, ok)
				}
				j.Extend(c, time.Second) // so that Sweep finds some expired
				if i%2 == 0 {
					j.Revoke(c)
				}
				if i%50 == 0 { // at most 32 minutes in all: Issue's hour holds
					clock.Advance(time.Minute)
					j.Sweep()
				}
			}
		})
	}
	wg.Wait()
}

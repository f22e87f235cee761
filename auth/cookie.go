package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// CookieBytes is the size of a session cookie: 256 random bits, far beyond
// guessing range even for an attacker who can try many cookies per second.
const CookieBytes = 32

// Cookie is a random session token. The client gets it after logging in and
// presents it (as webvpn=<hex>) to open the tunnel.
type Cookie [CookieBytes]byte

// NewCookie returns a cookie from the system's secure random source.
func NewCookie() (Cookie, error) {
	var c Cookie
	if _, err := rand.Read(c[:]); err != nil {
		return c, fmt.Errorf("auth: reading random cookie: %w", err)
	}
	return c, nil
}

// String returns c as 64 lowercase hex digits.
func (c Cookie) String() string {
	return hex.EncodeToString(c[:])
}

var errBadCookie = errors.New("auth: cookie must be 64 lowercase hex digits")

// ParseCookie parses the form String returns. It accepts exactly 64
// lowercase hex digits, nothing else: one spelling per cookie keeps logs
// and comparisons of the text form unambiguous.
func ParseCookie(s string) (Cookie, error) {
	var c Cookie
	if len(s) != 2*CookieBytes {
		return c, errBadCookie
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
			return c, errBadCookie
		}
	}
	if _, err := hex.Decode(c[:], []byte(s)); err != nil {
		return c, errBadCookie
	}
	return c, nil
}

// jarKey is the map key for a cookie: its SHA-256. Map lookups compare keys
// with ordinary, early-exit comparisons; hashing first means any timing
// they leak is about the digest, which tells an attacker nothing about
// which cookie to try next.
type jarKey [sha256.Size]byte

type jarEntry[T any] struct {
	cookie  Cookie
	value   T
	expires time.Time
}

// CookieJar maps session cookies to values of type T, each with an expiry
// time. It is safe for concurrent use.
type CookieJar[T any] struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[jarKey]*jarEntry[T]
}

// NewCookieJar returns an empty jar that reads the time from now, or from
// time.Now if now is nil (tests pass a fake clock).
func NewCookieJar[T any](now func() time.Time) *CookieJar[T] {
	if now == nil {
		now = time.Now
	}
	return &CookieJar[T]{now: now, entries: make(map[jarKey]*jarEntry[T])}
}

// Issue stores v under a new random cookie that expires after ttl.
func (j *CookieJar[T]) Issue(v T, ttl time.Duration) (Cookie, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		c, err := NewCookie()
		if err != nil {
			return c, err
		}
		k := jarKey(sha256.Sum256(c[:]))
		// A collision is not going to happen with 256 random bits, but
		// silently replacing another session would be the wrong outcome
		// if it ever did.
		if _, taken := j.entries[k]; taken {
			continue
		}
		j.entries[k] = &jarEntry[T]{cookie: c, value: v, expires: j.now().Add(ttl)}
		return c, nil
	}
}

// find returns c's entry, expired or not. The caller holds j.mu. Expired
// entries stay until Sweep takes them: Sweep is how their sessions end, so
// a lookup must not make one vanish unseen (its session would live on).
func (j *CookieJar[T]) find(c Cookie) (jarKey, *jarEntry[T]) {
	k := jarKey(sha256.Sum256(c[:]))
	e, ok := j.entries[k]
	// The digest already identifies the cookie; the constant-time compare
	// of the cookie itself guards against relying on that alone.
	if !ok || subtle.ConstantTimeCompare(e.cookie[:], c[:]) != 1 {
		return k, nil
	}
	return k, e
}

// live returns c's entry if it has not expired. The caller holds j.mu.
func (j *CookieJar[T]) live(c Cookie) *jarEntry[T] {
	if _, e := j.find(c); e != nil && j.now().Before(e.expires) {
		return e
	}
	return nil
}

// Lookup returns the value stored under c. It reports false if c is
// unknown or has expired (an expired entry waits for Sweep).
func (j *CookieJar[T]) Lookup(c Cookie) (T, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e := j.live(c); e != nil {
		return e.value, true
	}
	var zero T
	return zero, false
}

// Expired returns the value stored under c if its entry has expired and
// Sweep has not taken it yet, so a caller meeting it first can end what
// it refers to.
func (j *CookieJar[T]) Expired(c Cookie) (T, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, e := j.find(c); e != nil && !j.now().Before(e.expires) {
		return e.value, true
	}
	var zero T
	return zero, false
}

// Extend makes c expire ttl from now. It reports false, changing nothing,
// if c is unknown or has already expired: an expired session stays dead.
func (j *CookieJar[T]) Extend(c Cookie, ttl time.Duration) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.live(c)
	if e == nil {
		return false
	}
	e.expires = j.now().Add(ttl)
	return true
}

// Revoke removes c from the jar, if it is there, expired or not.
func (j *CookieJar[T]) Revoke(c Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if k, e := j.find(c); e != nil {
		delete(j.entries, k)
	}
}

// Sweep removes all expired cookies and returns their values, so the
// caller can tear down whatever they refer to. Call it periodically: expired
// cookies are otherwise removed only when looked up.
func (j *CookieJar[T]) Sweep() []T {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	var gone []T
	for k, e := range j.entries {
		if !now.Before(e.expires) {
			gone = append(gone, e.value)
			delete(j.entries, k)
		}
	}
	return gone
}

// Len returns the number of cookies in the jar, expired or not.
func (j *CookieJar[T]) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.entries)
}

// Insert stores v under the given cookie (a resumed session keeps the
// identity its signed cookie names). It reports false, changing nothing,
// if c is already in the jar and live.
func (j *CookieJar[T]) Insert(c Cookie, v T, ttl time.Duration) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	k, e := j.find(c)
	if e != nil && j.now().Before(e.expires) {
		return false
	}
	j.entries[k] = &jarEntry[T]{cookie: c, value: v, expires: j.now().Add(ttl)}
	return true
}

package auth

import (
	"container/list"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Throttling policy. A few typos cost nothing; beyond that each attempt
// waits twice as long as the one before, which makes online guessing
// hopeless (a few hundred guesses a day at the cap) while a real user who
// mistyped is delayed seconds, and the slate is wiped once they stop
// failing for a while.
const (
	freeFailures    = 3                // failures before any delay: the 4th attempt waits baseDelay
	baseDelay       = time.Second      // wait after the first non-free failure
	maxDelay        = 5 * time.Minute  // the doubling stops here
	forgetAfter     = 15 * time.Minute // a counter with no failure this long is dropped
	maxThrottleKeys = 10000            // per table; the oldest entry goes past this
	maxUserKeyLen   = 256              // longer usernames are truncated for keying
)

// Throttle rate-limits login attempts after failures, counting failures per
// username and per source address independently: per user stops a
// distributed attack on one account, per address stops one host trying many
// accounts. Safe for concurrent use.
//
// After three failures on a key, an attempt must wait 1s from the latest
// failure; each further failure doubles the wait, up to 5 minutes. A key's
// count is dropped 15 minutes after its latest failure.
//
// IPv6 addresses are counted per /64, since a single host usually has a
// whole /64 to pick source addresses from.
type Throttle struct {
	now func() time.Time

	mu    sync.Mutex
	users throttleTable[string]
	addrs throttleTable[netip.Prefix]
}

// NewThrottle returns an empty Throttle that reads the time from now, or
// from time.Now if now is nil.
func NewThrottle(now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{
		now:   now,
		users: newThrottleTable[string](),
		addrs: newThrottleTable[netip.Prefix](),
	}
}

// Allow reports whether a login attempt for user from addr may proceed now.
// If not, retryAfter is how long until it may. An allowed attempt on a
// counter already past the free failures reserves the next delay, so
// parallel connections cannot all slip through in the same instant.
func (t *Throttle) Allow(user string, addr netip.Addr) (ok bool, retryAfter time.Duration) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.users.get(userKey(user), now)
	a := t.addrs.get(addrKey(addr), now)
	if wait := max(u.wait(now), a.wait(now)); wait > 0 {
		return false, wait
	}
	u.reserve(now)
	a.reserve(now)
	return true, 0
}

// Fail records a failed login attempt for user from addr.
func (t *Throttle) Fail(user string, addr netip.Addr) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users.fail(userKey(user), now)
	t.addrs.fail(addrKey(addr), now)
}

// Succeed records a successful login: it clears user's failures. The
// address keeps its count, so an attacker holding one valid account cannot
// use it to reset the limit on guessing other accounts from the same host.
func (t *Throttle) Succeed(user string, addr netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users.remove(userKey(user))
}

// userKey bounds the memory one table entry can hold; strings.Clone keeps
// the key from pinning a large request buffer.
func userKey(user string) string {
	if len(user) > maxUserKeyLen {
		user = user[:maxUserKeyLen]
	}
	return strings.Clone(user)
}

// addrKey maps an address to the prefix its failures count against: the
// address itself for IPv4 (IPv4-mapped IPv6 included), its /64 for IPv6.
func addrKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits) // fails only for the zero Addr, which all share one key
	return p
}

// delayAfter returns how long to wait after n consecutive failures.
func delayAfter(n int) time.Duration {
	if n < freeFailures {
		return 0
	}
	shift := n - freeFailures
	if shift >= 20 { // far past the cap; avoids overflowing the shift
		return maxDelay
	}
	return min(baseDelay<<shift, maxDelay)
}

// throttleEntry counts one key's failures.
type throttleEntry[K comparable] struct {
	key      K
	failures int
	last     time.Time // latest failure; the entry is forgotten forgetAfter later
	next     time.Time // no attempt may start before this
}

// wait returns how long until e allows an attempt; e may be nil.
func (e *throttleEntry[K]) wait(now time.Time) time.Duration {
	if e == nil || e.failures < freeFailures {
		return 0
	}
	return max(e.next.Sub(now), 0)
}

// reserve pushes the next allowed attempt out by the current delay; e may
// be nil.
func (e *throttleEntry[K]) reserve(now time.Time) {
	if e != nil && e.failures >= freeFailures {
		e.next = now.Add(delayAfter(e.failures))
	}
}

// throttleTable holds the entries of one kind of key, in a list ordered by
// latest failure (oldest first) so that both forgetting stale entries and
// evicting the oldest when full take constant time per entry.
type throttleTable[K comparable] struct {
	byKey map[K]*list.Element // Value is *throttleEntry[K]
	order *list.List
}

func newThrottleTable[K comparable]() throttleTable[K] {
	return throttleTable[K]{byKey: make(map[K]*list.Element), order: list.New()}
}

// expire drops entries whose latest failure is forgetAfter old or more.
func (tt *throttleTable[K]) expire(now time.Time) {
	for el := tt.order.Front(); el != nil; el = tt.order.Front() {
		e := el.Value.(*throttleEntry[K])
		if now.Sub(e.last) < forgetAfter {
			return
		}
		tt.order.Remove(el)
		delete(tt.byKey, e.key)
	}
}

// get returns k's entry, or nil if it has none.
func (tt *throttleTable[K]) get(k K, now time.Time) *throttleEntry[K] {
	tt.expire(now)
	if el, ok := tt.byKey[k]; ok {
		return el.Value.(*throttleEntry[K])
	}
	return nil
}

// fail counts a failure for k, making room if the table is full. Evicting
// the oldest entry lets a flood of fresh keys push out a real one, but the
// alternative, refusing new keys, would let the flood disable throttling.
func (tt *throttleTable[K]) fail(k K, now time.Time) {
	tt.expire(now)
	el, ok := tt.byKey[k]
	if !ok {
		if tt.order.Len() >= maxThrottleKeys {
			oldest := tt.order.Front()
			tt.order.Remove(oldest)
			delete(tt.byKey, oldest.Value.(*throttleEntry[K]).key)
		}
		el = tt.order.PushBack(&throttleEntry[K]{key: k})
		tt.byKey[k] = el
	}
	e := el.Value.(*throttleEntry[K])
	e.failures++
	e.last = now
	e.next = now.Add(delayAfter(e.failures))
	tt.order.MoveToBack(el)
}

// remove forgets k.
func (tt *throttleTable[K]) remove(k K) {
	if el, ok := tt.byKey[k]; ok {
		tt.order.Remove(el)
		delete(tt.byKey, k)
	}
}

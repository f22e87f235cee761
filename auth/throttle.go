package auth

import (
	"container/list"
	"context"
	"net/netip"
	"slices"
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
	freeFailures     = 3                // failures before any delay: the 4th attempt waits baseDelay
	userFreeFailures = 30               // the same for one user from all addresses together
	baseDelay        = time.Second      // wait after the first non-free failure
	maxDelay         = 5 * time.Minute  // the doubling stops here
	forgetAfter      = 15 * time.Minute // a counter with no failure this long is dropped
	trustFor         = 24 * time.Hour   // a (user, address) pair that logged in is trusted this long
	maxThrottleKeys  = 10000            // per table; the oldest entry goes past this
	maxUserKeyLen    = 256              // longer usernames are truncated for keying
)

// Throttle rate-limits login attempts after failures. Safe for concurrent
// use. It counts, each with its own backoff:
//
//   - per (user, source address) pair: one host guessing one account is
//     slowed after 3 failures;
//   - per source address: one host guessing many accounts is slowed after
//     3 failures;
//   - per user, from all addresses together: a distributed guess at one
//     account is slowed after 30 failures. This count does not apply to a
//     (user, address) pair that logged in successfully within the last
//     24 hours, so someone failing on purpose for a user from elsewhere
//     cannot lock the real user out where they usually log in (a targeted
//     lockout); a new address of the real user does wait it out.
//
// After the free failures of a count, an attempt must wait 1s from the
// latest failure; each further failure doubles the wait, up to 5 minutes.
// A count is dropped 15 minutes after its latest failure or attempt.
//
// An attempt counts from the moment Allow lets it through until Fail,
// Succeed or Abandon resolves it: in flight, it counts like a failure, so
// parallel attempts on a fresh key cannot all pass at once (the 4th waits
// until one resolves), and past the free failures at most one attempt is
// in flight per key.
//
// IPv6 addresses are counted per /64, since a single host usually has a
// whole /64 to pick source addresses from.
type Throttle struct {
	now func() time.Time

	mu      sync.Mutex
	pairs   throttleTable[pairKey]
	users   throttleTable[string]
	addrs   throttleTable[netip.Prefix]
	trusted throttleTable[pairKey] // pairs that logged in; failures is unused
	// waiters are the attempts in Wait, oldest first (wake).
	waiters []*throttleWaiter
}

// pairKey is a (user, address prefix) pair.
type pairKey struct {
	user string
	addr netip.Prefix
}

// NewThrottle returns an empty Throttle that reads the time from now, or
// from time.Now if now is nil.
func NewThrottle(now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{
		now:     now,
		pairs:   newThrottleTable[pairKey](freeFailures, forgetAfter),
		users:   newThrottleTable[string](userFreeFailures, forgetAfter),
		addrs:   newThrottleTable[netip.Prefix](freeFailures, forgetAfter),
		trusted: newThrottleTable[pairKey](0, trustFor),
	}
}

// Allow reports whether a login attempt for user from addr may proceed now.
// If not, retryAfter is how long until it may. An allowed attempt is in
// flight until Fail, Succeed or Abandon is called for it with the same
// user and addr; the caller must call exactly one of them.
func (t *Throttle) Allow(user string, addr netip.Addr) (ok bool, retryAfter time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok, retryAfter, _ = t.allowLocked(user, addr)
	return ok, retryAfter
}

// Wait is Allow, except that an attempt held back only by attempts in
// flight (say a fourth user logging in at once from behind one NAT) waits
// for them to resolve, until ctx ends, instead of being refused: if they
// succeed it goes ahead, if they fail it is refused for their failures.
// Waiters are served in the order they came (the resolving attempt hands
// its place to the oldest waiter it can let through), so behind a busy
// address no login waits longer than those ahead of it.
func (t *Throttle) Wait(ctx context.Context, user string, addr netip.Addr) (ok bool, retryAfter time.Duration) {
	t.mu.Lock()
	ok, retryAfter, held := t.allowLocked(user, addr)
	if ok || !held {
		t.mu.Unlock()
		return ok, retryAfter
	}
	w := &throttleWaiter{user: user, addr: addr, retry: retryAfter, done: make(chan struct{})}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	select {
	case <-w.done:
		return w.ok, w.retry
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-w.done: // served while ctx ended: the attempt is the caller's
		return w.ok, w.retry
	default:
	}
	t.waiters = slices.DeleteFunc(t.waiters, func(o *throttleWaiter) bool { return o == w })
	return false, w.retry
}

// throttleWaiter is an attempt in Wait; wake decides it.
type throttleWaiter struct {
	user  string
	addr  netip.Addr
	done  chan struct{} // closed when ok and retry are set
	ok    bool
	retry time.Duration
}

// allowLocked is Allow under t.mu; held reports a refusal due only to
// attempts in flight.
func (t *Throttle) allowLocked(user string, addr netip.Addr) (ok bool, retryAfter time.Duration, held bool) {
	now := t.now()
	pk := pairKey{userKey(user), addrKey(addr)}
	trusted := t.trusted.get(pk, now) != nil
	p := t.pairs.get(pk, now)
	a := t.addrs.get(pk.addr, now)
	pw, ph := t.pairs.wait(p, now)
	aw, ah := t.addrs.wait(a, now)
	wait, held := max(pw, aw), (pw == 0 || ph) && (aw == 0 || ah)
	var u *throttleEntry[string]
	if !trusted {
		u = t.users.get(pk.user, now)
		uw, uh := t.users.wait(u, now)
		wait, held = max(wait, uw), held && (uw == 0 || uh)
	}
	if wait > 0 {
		return false, wait, held
	}
	t.pairs.start(pk, p, now)
	t.addrs.start(pk.addr, a, now)
	if !trusted {
		t.users.start(pk.user, u, now)
	}
	return true, 0, false
}

// wake decides the attempts waiting in Wait, oldest first: each that may
// go ahead now is let through, each refused for failures is told so, the
// rest keep waiting. Called under t.mu whenever an attempt resolves.
func (t *Throttle) wake() {
	t.waiters = slices.DeleteFunc(t.waiters, func(w *throttleWaiter) bool {
		ok, retry, held := t.allowLocked(w.user, w.addr)
		if !ok && held {
			return false
		}
		w.ok, w.retry = ok, retry
		close(w.done)
		return true
	})
}

// Fail records a failed login attempt for user from addr, resolving the
// attempt Allow let through.
func (t *Throttle) Fail(user string, addr netip.Addr) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	pk := pairKey{userKey(user), addrKey(addr)}
	t.pairs.fail(pk, now)
	t.addrs.fail(pk.addr, now)
	t.users.fail(pk.user, now)
	t.wake()
}

// Succeed records a successful login: it clears the pair's failures and
// trusts the pair from now on (see Throttle). The address keeps its count,
// so an attacker holding one valid account cannot use it to reset the limit
// on guessing other accounts from the same host; the user's count from all
// addresses is kept too, so the real user logging in does not reset a
// distributed guess at their account.
func (t *Throttle) Succeed(user string, addr netip.Addr) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	pk := pairKey{userKey(user), addrKey(addr)}
	t.pairs.remove(pk)
	t.addrs.done(pk.addr)
	t.users.done(pk.user)
	t.trusted.touch(pk, now)
	t.wake()
}

// Abandon resolves an attempt that Allow let through but that was never
// checked (the server was too busy to verify the password): it counts as
// neither failure nor success.
func (t *Throttle) Abandon(user string, addr netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pk := pairKey{userKey(user), addrKey(addr)}
	t.pairs.done(pk)
	t.addrs.done(pk.addr)
	t.users.done(pk.user)
	t.wake()
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

// delayAfter returns how long to wait after n consecutive failures when
// the first free ones cost nothing.
func delayAfter(n, free int) time.Duration {
	if n < free {
		return 0
	}
	shift := n - free
	if shift >= 20 { // far past the cap; avoids overflowing the shift
		return maxDelay
	}
	return min(baseDelay<<shift, maxDelay)
}

// throttleEntry counts one key's failures and attempts in flight.
type throttleEntry[K comparable] struct {
	key      K
	failures int
	inflight int       // attempts let through and not yet resolved
	last     time.Time // latest failure or attempt; the entry is forgotten forget later
	next     time.Time // no attempt may start before this
}

// throttleTable holds the entries of one kind of key, in a list ordered by
// latest activity (oldest first) so that both forgetting stale entries and
// evicting the oldest when full take constant time per entry.
type throttleTable[K comparable] struct {
	free   int                 // failures before any delay
	forget time.Duration       // an entry idle this long is dropped
	byKey  map[K]*list.Element // Value is *throttleEntry[K]
	order  *list.List
}

func newThrottleTable[K comparable](free int, forget time.Duration) throttleTable[K] {
	return throttleTable[K]{free: free, forget: forget, byKey: make(map[K]*list.Element), order: list.New()}
}

// expire drops entries idle for tt.forget or more. An attempt in flight
// is resolved within the login deadline, far shorter.
func (tt *throttleTable[K]) expire(now time.Time) {
	for el := tt.order.Front(); el != nil; el = tt.order.Front() {
		e := el.Value.(*throttleEntry[K])
		if now.Sub(e.last) < tt.forget {
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

// wait returns how long until e allows an attempt (e may be nil), and
// whether only attempts in flight hold it back. Attempts in flight count
// as failures; past the free failures only one may be in flight, and only
// once the delay has passed.
func (tt *throttleTable[K]) wait(e *throttleEntry[K], now time.Time) (time.Duration, bool) {
	if e == nil || e.failures+e.inflight < tt.free {
		return 0, false
	}
	if e.failures >= tt.free && now.Before(e.next) {
		return e.next.Sub(now), false
	}
	if e.inflight > 0 {
		// Held only by attempts in flight: one resolves within seconds.
		return max(e.next.Sub(now), baseDelay), true
	}
	return 0, false
}

// entry returns k's entry, making it (room included) if there is none.
// Evicting the oldest entry lets a flood of fresh keys push out a real one,
// but the alternative, refusing new keys, would let the flood disable
// throttling.
func (tt *throttleTable[K]) entry(k K, now time.Time) *throttleEntry[K] {
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
	e.last = now
	tt.order.MoveToBack(el)
	return e
}

// start counts an attempt in flight on k (whose entry e may be nil).
func (tt *throttleTable[K]) start(k K, e *throttleEntry[K], now time.Time) {
	if e == nil {
		e = tt.entry(k, now)
	} else {
		e.last = now
		tt.order.MoveToBack(tt.byKey[k])
	}
	e.inflight++
}

// fail resolves an attempt on k as a failure.
func (tt *throttleTable[K]) fail(k K, now time.Time) {
	e := tt.entry(k, now)
	e.inflight = max(e.inflight-1, 0)
	e.failures++
	e.next = now.Add(delayAfter(e.failures, tt.free))
}

// done resolves an attempt on k without a failure; an entry left with
// nothing to count goes.
func (tt *throttleTable[K]) done(k K) {
	el, ok := tt.byKey[k]
	if !ok {
		return
	}
	e := el.Value.(*throttleEntry[K])
	e.inflight = max(e.inflight-1, 0)
	if e.inflight == 0 && e.failures == 0 {
		tt.order.Remove(el)
		delete(tt.byKey, k)
	}
}

// touch makes sure k has an entry and marks it active now.
func (tt *throttleTable[K]) touch(k K, now time.Time) { tt.entry(k, now) }

// remove forgets k.
func (tt *throttleTable[K]) remove(k K) {
	if el, ok := tt.byKey[k]; ok {
		tt.order.Remove(el)
		delete(tt.byKey, k)
	}
}

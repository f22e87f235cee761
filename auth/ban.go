package auth

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// Bans keeps ocserv-style ban scores per source address (IPv6 per /64, as
// the Throttle counts): each wrong password adds pointsWrongPassword to
// the address's score, and an address whose score reached maxScore is
// refused before any work (no TLS handshake, no password check) until its
// score is reset, resetTime after the first point of the current score.
// With ocserv's defaults (10 points a wrong password, max-ban-score 80,
// ban-reset-time 1200 s) an address is banned for the rest of a 20-minute
// window after its 8th wrong password. Where the Throttle slows guessing
// down, a ban stops it outright, and costs the banned address nothing to
// check. Safe for concurrent use; the table is bounded (the oldest scores
// go first).
type Bans struct {
	maxScore, points int
	reset            time.Duration
	now              func() time.Time

	mu     sync.Mutex
	byAddr map[netip.Prefix]*list.Element // Value is *banEntry
	order  *list.List                     // by start of the score, oldest first
}

type banEntry struct {
	key   netip.Prefix
	score int
	start time.Time // first point of the current score
}

// NewBans returns an empty table. A zero maxScore, pointsWrongPassword or
// resetTime disables banning (Banned is then always false). now is the
// clock, time.Now if nil.
func NewBans(maxScore, pointsWrongPassword int, resetTime time.Duration, now func() time.Time) *Bans {
	if now == nil {
		now = time.Now
	}
	return &Bans{
		maxScore: maxScore, points: pointsWrongPassword, reset: resetTime, now: now,
		byAddr: map[netip.Prefix]*list.Element{}, order: list.New(),
	}
}

// Enabled reports whether the table bans at all (a nil *Bans does not).
func (b *Bans) Enabled() bool { return b != nil && b.maxScore > 0 && b.points > 0 && b.reset > 0 }

// expire drops scores whose window has passed.
func (b *Bans) expire(now time.Time) {
	for el := b.order.Front(); el != nil; el = b.order.Front() {
		e := el.Value.(*banEntry)
		if now.Sub(e.start) < b.reset {
			return
		}
		b.order.Remove(el)
		delete(b.byAddr, e.key)
	}
}

// Banned reports whether addr is banned now, and if so for how long yet.
func (b *Bans) Banned(addr netip.Addr) (bool, time.Duration) {
	if !b.Enabled() {
		return false, 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	el, ok := b.byAddr[addrKey(addr)]
	if !ok {
		return false, 0
	}
	e := el.Value.(*banEntry)
	if e.score < b.maxScore {
		return false, 0
	}
	return true, e.start.Add(b.reset).Sub(now)
}

// WrongPassword adds a wrong password's points to addr's score and reports
// whether this made the address banned (true only on the crossing, for a
// single log line).
func (b *Bans) WrongPassword(addr netip.Addr) (nowBanned bool) {
	if !b.Enabled() {
		return false
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	k := addrKey(addr)
	el, ok := b.byAddr[k]
	if !ok {
		if b.order.Len() >= maxThrottleKeys {
			oldest := b.order.Front()
			b.order.Remove(oldest)
			delete(b.byAddr, oldest.Value.(*banEntry).key)
		}
		el = b.order.PushBack(&banEntry{key: k, start: now})
		b.byAddr[k] = el
	}
	e := el.Value.(*banEntry)
	before := e.score
	e.score += b.points
	return before < b.maxScore && e.score >= b.maxScore
}

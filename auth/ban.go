package auth

import (
	"container/list"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Bans keeps ocserv-style ban scores per source address (IPv6 per /64, as
// the Throttle counts). Events add points to the address's score: a wrong
// password (ban-points-wrong-password, 10), a connection that ended
// without logging in (ban-points-connection, 1; the caller decides), a
// malformed request (ban-points-malformed-request,
// 10). An address whose score reached maxScore is refused before any work
// (no TLS handshake, no password check) for minReauth from the point that
// took it there (each further point starts that time again), as ocserv's
// min-reauth-time; with minReauth 0 it stays banned until its score is
// reset. A score is reset resetTime after its first point
// (ban-reset-time).
//
// Users behind one NAT address share its score. So that one user's typos
// cannot ban everyone behind it, the wrong passwords of one username
// count at most maxScore/2 points per address and score (the Throttle
// slows that one user down instead); only guesses for several names, or
// connection and malformed-request points besides, ban an address.
//
// Safe for concurrent use; the table is bounded (the oldest scores go
// first).
type Bans struct {
	cfg BanConfig
	now func() time.Time

	mu     sync.Mutex
	byAddr map[netip.Prefix]*list.Element // Value is *banEntry
	order  *list.List                     // by start of the score, oldest first
}

// BanConfig is what Bans counts. Zero MaxScore or ResetTime disables
// banning; a zero point value makes its event free.
type BanConfig struct {
	MaxScore         int
	ResetTime        time.Duration
	MinReauth        time.Duration // ban length after the score is reached; 0: until reset
	WrongPassword    int
	Connection       int
	MalformedRequest int
}

type banEntry struct {
	key   netip.Prefix
	score int
	start time.Time // first point of the current score
	until time.Time // end of the ban (minReauth), zero if not banned
	// byUser are the wrong-password points of each username (at most
	// maxUsersPerScore of them are tracked).
	byUser map[string]int
}

// maxUsersPerScore bounds the usernames an entry remembers for the
// per-user cap; an address failing for more names than that is guessing.
const maxUsersPerScore = 32

// BanInfo is one address's score, as `vpnd ctl show ip ban points` shows it.
type BanInfo struct {
	Addr    netip.Prefix
	Score   int
	Banned  bool
	Since   time.Time // first point of the score
	Expires time.Time // end of the ban if banned, else when the score resets
}

// NewBansConfig returns an empty table counting as cfg says.
func NewBansConfig(cfg BanConfig, now func() time.Time) *Bans {
	if now == nil {
		now = time.Now
	}
	return &Bans{cfg: cfg, now: now, byAddr: map[netip.Prefix]*list.Element{}, order: list.New()}
}

// Enabled reports whether the table bans at all (a nil *Bans does not).
func (b *Bans) Enabled() bool { return b != nil && b.cfg.MaxScore > 0 && b.cfg.ResetTime > 0 }

// expire drops scores whose window has passed; a score whose ban lasts
// longer stays until the ban ends.
func (b *Bans) expire(now time.Time) {
	for el := b.order.Front(); el != nil; {
		e := el.Value.(*banEntry)
		if now.Sub(e.start) < b.cfg.ResetTime {
			return
		}
		next := el.Next()
		if now.Before(e.until) {
			// Banned beyond the reset: the score restarts at the ban's
			// level, so the ban runs its course.
			e.start = now
			b.order.MoveToBack(el)
		} else {
			b.order.Remove(el)
			delete(b.byAddr, e.key)
		}
		el = next
	}
}

// bannedLocked reports whether e is banned at now.
func (b *Bans) bannedLocked(e *banEntry, now time.Time) bool {
	if e.score < b.cfg.MaxScore {
		return false
	}
	return b.cfg.MinReauth == 0 || now.Before(e.until)
}

// endLocked is when e's ban ends (banned entries only).
func (b *Bans) endLocked(e *banEntry) time.Time {
	if b.cfg.MinReauth == 0 {
		return e.start.Add(b.cfg.ResetTime)
	}
	return e.until
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
	if !b.bannedLocked(e, now) {
		return false, 0
	}
	return true, b.endLocked(e).Sub(now)
}

// WrongPassword adds a wrong password's points to addr's score, without a
// username (see WrongPasswordFor).
func (b *Bans) WrongPassword(addr netip.Addr) (nowBanned bool) {
	return b.add(addr, b.cfgPoints().WrongPassword, "", true)
}

// WrongPasswordFor adds a wrong password for user's points to addr's
// score, at most MaxScore/2 for one user, and reports whether this made
// the address banned (true only on the crossing, for a single log line).
func (b *Bans) WrongPasswordFor(addr netip.Addr, user string) (nowBanned bool) {
	return b.add(addr, b.cfgPoints().WrongPassword, user, true)
}

// Connection adds a connection's points.
func (b *Bans) Connection(addr netip.Addr) (nowBanned bool) {
	return b.add(addr, b.cfgPoints().Connection, "", false)
}

// Malformed adds a malformed request's points.
func (b *Bans) Malformed(addr netip.Addr) (nowBanned bool) {
	return b.add(addr, b.cfgPoints().MalformedRequest, "", false)
}

func (b *Bans) cfgPoints() BanConfig {
	if b == nil {
		return BanConfig{}
	}
	return b.cfg
}

func (b *Bans) add(addr netip.Addr, points int, user string, perUser bool) (nowBanned bool) {
	if !b.Enabled() || points <= 0 {
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
	if perUser && user != "" {
		if len(user) > maxUserKeyLen {
			user = user[:maxUserKeyLen]
		}
		if e.byUser == nil {
			e.byUser = map[string]int{}
		}
		if had, ok := e.byUser[user]; ok || len(e.byUser) < maxUsersPerScore {
			points = min(points, max(0, b.cfg.MaxScore/2-had))
			e.byUser[user] = had + points
		}
		if points == 0 {
			return false
		}
	}
	wasBanned := b.bannedLocked(e, now)
	e.score += points
	if e.score >= b.cfg.MaxScore && b.cfg.MinReauth > 0 {
		e.until = now.Add(b.cfg.MinReauth)
	}
	return !wasBanned && b.bannedLocked(e, now)
}

// List returns the scores kept, highest first.
func (b *Bans) List() []BanInfo {
	if !b.Enabled() {
		return nil
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	out := make([]BanInfo, 0, len(b.byAddr))
	for el := b.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*banEntry)
		bi := BanInfo{Addr: e.key, Score: e.score, Since: e.start, Expires: e.start.Add(b.cfg.ResetTime)}
		if b.bannedLocked(e, now) {
			bi.Banned, bi.Expires = true, b.endLocked(e)
		}
		out = append(out, bi)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	return out
}

// Unban forgets the score of the address (or /64) a, and reports whether
// there was one.
func (b *Bans) Unban(a netip.Addr) bool {
	if !b.Enabled() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	el, ok := b.byAddr[addrKey(a)]
	if !ok {
		return false
	}
	b.order.Remove(el)
	delete(b.byAddr, el.Value.(*banEntry).key)
	return true
}

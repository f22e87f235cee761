package dtls

import (
	"sync"
	"time"
)

// tokenBucket is a token bucket: rate tokens per second, at most burst.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// fill brings b up to now and reports whether it is full (a full bucket
// holds no state a fresh one would not).
func (b *tokenBucket) fill(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	return b.tokens >= burst
}

// globalBucket is one token bucket shared by all sources.
type globalBucket struct {
	mu          sync.Mutex
	b           tokenBucket
	rate, burst float64
}

func newGlobalBucket(rate, burst float64) *globalBucket {
	return &globalBucket{b: tokenBucket{tokens: burst, last: time.Now()}, rate: rate, burst: burst}
}

// empty reports whether not even one token is left.
func (g *globalBucket) empty() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.fill(time.Now(), g.rate, g.burst)
	return g.b.tokens < 1
}

// give returns n tokens taken and not spent.
func (g *globalBucket) give(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.tokens = min(g.burst, g.b.tokens+float64(n))
}

// take takes up to n tokens and returns how many it got.
func (g *globalBucket) take(n int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.fill(time.Now(), g.rate, g.burst)
	got := min(n, int(g.b.tokens))
	g.b.tokens -= float64(got)
	return got
}

// rateLimiter is a token bucket per key in a bounded table. When the table
// is full, buckets that have refilled completely are forgotten (losing
// nothing); if none has, an arbitrary one is. Never the whole table: a
// flood of new keys must not reset everyone's limit at once.
type rateLimiter[K comparable] struct {
	mu          sync.Mutex
	m           map[K]*tokenBucket
	rate, burst float64
	max         int
}

func newRateLimiter[K comparable](rate, burst float64, max int) *rateLimiter[K] {
	return &rateLimiter[K]{m: map[K]*tokenBucket{}, rate: rate, burst: burst, max: max}
}

func (r *rateLimiter[K]) allow(k K) bool { return r.take(k, 1) == 1 }

// evict makes room for one more bucket.
func (r *rateLimiter[K]) evict(now time.Time) {
	for k, b := range r.m {
		if b.fill(now, r.rate, r.burst) {
			delete(r.m, k)
		}
	}
	if len(r.m) < r.max {
		return
	}
	for k := range r.m {
		delete(r.m, k)
		return
	}
}

// take takes up to n tokens from k's bucket and returns how many it got.
func (r *rateLimiter[K]) take(k K, n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	b := r.m[k]
	if b == nil {
		if len(r.m) >= r.max {
			r.evict(now)
		}
		b = &tokenBucket{tokens: r.burst, last: now}
		r.m[k] = b
	}
	b.fill(now, r.rate, r.burst)
	got := min(n, int(b.tokens))
	b.tokens -= float64(got)
	return got
}

// returnTokens gives back n tokens taken from k's bucket and not spent.
func (r *rateLimiter[K]) returnTokens(k K, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.m[k]; b != nil {
		b.tokens = min(r.burst, b.tokens+float64(n))
	}
}

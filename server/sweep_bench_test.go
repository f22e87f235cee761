package server

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"kvpn/session"
)

// sweepSessions is how many connected sessions BenchmarkSweepOnce sweeps:
// issue #11's 10k.
const sweepSessions = 10000

// sweepInterval is how often Server.sweep runs (its ticker).
const sweepInterval = 5 * time.Second

// BenchmarkSweepOnce: one round of the sweep (session-timeout check and
// cookie refresh) over sweepSessions connected sessions; reports the
// share of one core the sweep costs at its 5 s interval.
func BenchmarkSweepOnce(b *testing.B) {
	ls := newLoginServer(b, func(c *Config) {
		c.IPv4Network = "10.64.0.0/16"
		c.MaxClients = 0
		c.MaxSameClients = 0
	})
	for i := range sweepSessions {
		sess := ls.newSession(fmt.Sprintf("user%d", i), netip.Addr{})
		c, err := ls.cookies.Issue(sess, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		sess.cookie = c
		// Connected as far as the sweep looks: it refreshes the cookie.
		sess.ch = &session.CSTPChannel{}
	}
	b.Cleanup(func() {
		// Ending 10k sessions one after another rewrites the revocation
		// file each time (auth.Revoked.save): minutes, not the subject.
		ls.revoked = nil
		for _, sess := range ls.list() {
			sess.mu.Lock()
			sess.ch = nil
			sess.mu.Unlock()
		}
	})
	for b.Loop() {
		ls.sweepOnce(time.Now())
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(100*per.Seconds()/sweepInterval.Seconds(), "%core")
}

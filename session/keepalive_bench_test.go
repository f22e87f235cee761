package session

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// keepaliveSessions is how many idle channels BenchmarkKeepAliveIdle
// watches: issue #11's 10k sessions (each has a TLS and a DTLS channel,
// so twice that many KeepAlive loops).
const keepaliveSessions = 10000

// keepaliveWindow is how long BenchmarkKeepAliveIdle measures: longer
// than the slowest periodic check with the default intervals.
const keepaliveWindow = 10 * time.Second

// idleChannel is a Keepable whose peer keeps sending DPD and keepalives
// of its own (as openconnect does), so the loop never has to act: what
// the benchmark measures is the cost of watching.
type idleChannel struct {
	recv, sent atomic.Int64 // unix nanoseconds
	checks     *atomic.Int64
}

func (c *idleChannel) Ping() error      { c.sent.Store(time.Now().UnixNano()); return nil }
func (c *idleChannel) Keepalive() error { c.sent.Store(time.Now().UnixNano()); return nil }
func (c *idleChannel) LastReceive() time.Time {
	c.checks.Add(1)
	return time.Unix(0, c.recv.Load())
}
func (c *idleChannel) LastSend() time.Time { return time.Unix(0, c.sent.Load()) }

// cpuTime is the process's user plus system CPU time (getrusage(2)).
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkKeepAliveIdle: 2 x keepaliveSessions KeepAlive loops with
// vpnd's default intervals (DPD 60 s, keepalive 30 s) on idle channels
// whose peers send now and then; reports the share of one core they use
// and how often they wake.
func BenchmarkKeepAliveIdle(b *testing.B) {
	l := Liveness{DPD: 60 * time.Second, Keepalive: 30 * time.Second}
	var checks atomic.Int64
	chans := make([]*idleChannel, 2*keepaliveSessions)
	now := time.Now().UnixNano()
	for i := range chans {
		// Sessions that came up at different moments: the latest send
		// spread over the keepalive interval, the latest receive over
		// the peers' 20 s.
		chans[i] = &idleChannel{checks: &checks}
		chans[i].recv.Store(now - int64(i%200)*int64(100*time.Millisecond))
		chans[i].sent.Store(now - int64(i%300)*int64(100*time.Millisecond))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Go(func() { KeepAlive(ctx, ch, l) })
	}
	// The peers: each channel hears from its client every 20 s (below the
	// keepalive interval, as openconnect's keepalive is), spread out.
	peerStop := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-peerStop:
				return
			case tm := <-t.C:
				// 1/200 of the channels per tick: each once per 20 s.
				for j := i % 200; j < len(chans); j += 200 {
					chans[j].recv.Store(tm.UnixNano())
				}
			}
		}
	}()
	time.Sleep(2 * time.Second) // every loop started and settled
	var cpu, wall time.Duration
	var woke int64
	for b.Loop() {
		c0, w0, k0 := cpuTime(b), time.Now(), checks.Load()
		time.Sleep(keepaliveWindow)
		cpu += cpuTime(b) - c0
		wall += time.Since(w0)
		woke += checks.Load() - k0
	}
	close(peerStop)
	cancel()
	wg.Wait()
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%core")
	b.ReportMetric(float64(woke)/wall.Seconds(), "wakeups/s")
}

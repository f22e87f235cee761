package session

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeepAliveSleepsUntilDue: on a channel whose peer keeps talking,
// KeepAlive sends a keepalive once per Keepalive of silence on its own
// side and otherwise sleeps: it looks at the channel about once per
// keepalive, not every Keepalive/4 (before, 13 looks in 1 s here).
func TestKeepAliveSleepsUntilDue(t *testing.T) {
	var checks atomic.Int64
	ch := &idleChannel{checks: &checks}
	ch.sent.Store(time.Now().UnixNano())
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the peer: heard from every 10 ms
		for {
			ch.recv.Store(time.Now().UnixNano())
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	var keepalives atomic.Int64
	counted := &countingKeepable{idleChannel: ch, keepalives: &keepalives}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := KeepAlive(ctx, counted, Liveness{DPD: 10 * time.Second, Keepalive: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if n := keepalives.Load(); n < 2 || n > 4 {
		t.Errorf("%d keepalives in 1 s at a 300 ms interval, want 3", n)
	}
	if n := checks.Load(); n > 6 {
		t.Errorf("KeepAlive looked at the channel %d times in 1 s for 3 keepalives", n)
	}
}

// countingKeepable counts keepalives sent.
type countingKeepable struct {
	*idleChannel
	keepalives *atomic.Int64
}

func (c *countingKeepable) Keepalive() error {
	c.keepalives.Add(1)
	return c.idleChannel.Keepalive()
}

// TestKeepAlivePingsSilentPeer: a peer silent for DPD gets DPD requests
// every DPD/2 until it is declared dead at 2 x DPD.
func TestKeepAlivePingsSilentPeer(t *testing.T) {
	var checks atomic.Int64
	ch := &idleChannel{checks: &checks}
	now := time.Now().UnixNano()
	ch.recv.Store(now)
	ch.sent.Store(now)
	pings := &countingPinger{idleChannel: ch}
	start := time.Now()
	err := KeepAlive(context.Background(), pings, Liveness{DPD: 200 * time.Millisecond})
	if err != ErrDeadPeer {
		t.Fatalf("got %v, want ErrDeadPeer", err)
	}
	// Not before 2 x DPD; how much later is the scheduler's business (the
	// count of DPD requests below shows it did not linger).
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("dead after %s, want 2 x DPD (400ms)", took)
	}
	// At 200 and 300 ms (and at 400 ms if the ping check runs first).
	if n := pings.n.Load(); n < 2 || n > 3 {
		t.Errorf("%d DPD requests, want 2", n)
	}
}

// countingPinger counts DPD requests.
type countingPinger struct {
	*idleChannel
	n atomic.Int64
}

func (c *countingPinger) Ping() error { c.n.Add(1); return nil }

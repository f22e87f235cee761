package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestVerifyPoolBound: however many callers, at most Size run at once, and
// every caller that fits the queue runs.
func TestVerifyPoolBound(t *testing.T) {
	p := NewVerifyPool(2, 100, 10*time.Second)
	var now, peak atomic.Int64
	var wg sync.WaitGroup
	var errs atomic.Int64
	for range 50 {
		wg.Go(func() {
			err := p.Do(context.Background(), func() {
				n := now.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
				now.Add(-1)
			})
			if err != nil {
				errs.Add(1)
			}
		})
	}
	wg.Wait()
	if got := peak.Load(); got > 2 {
		t.Fatalf("%d verifications ran at once in a pool of 2", got)
	}
	if p.Peak() > 2 || p.Completed() != 50 || errs.Load() != 0 {
		t.Fatalf("peak %d, completed %d, errors %d", p.Peak(), p.Completed(), errs.Load())
	}
}

// TestVerifyPoolBusy: a full queue and a wait over the bound are ErrBusy,
// at once and after the bound respectively, without running fn.
func TestVerifyPoolBusy(t *testing.T) {
	p := NewVerifyPool(1, 1, 500*time.Millisecond)
	release := make(chan struct{})
	started := make(chan struct{})
	go p.Do(context.Background(), func() { close(started); <-release })
	<-started
	defer close(release)

	// The one queue place: waits its bound, then gives up.
	done := make(chan error, 1)
	go func() { done <- p.Do(context.Background(), func() { t.Error("ran while the slot was held") }) }()
	time.Sleep(10 * time.Millisecond)
	// The queue is full now: refused at once.
	if err := p.Do(context.Background(), func() { t.Error("ran past a full queue") }); !errors.Is(err, ErrBusy) {
		t.Fatalf("full queue: %v", err)
	}
	// At once: before the queued call has waited out its bound (the slot
	// is still held, so that call cannot have ended any other way).
	select {
	case err := <-done:
		t.Fatalf("the full queue was refused only after the queued call ended (%v)", err)
	default:
	}
	if err := <-done; !errors.Is(err, ErrBusy) {
		t.Fatalf("wait over the bound: %v", err)
	}
	if p.Refused() != 2 {
		t.Fatalf("refused %d, want 2", p.Refused())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Do(ctx, func() {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

package auth

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"
)

// ErrBusy is what VerifyPool.Do returns when a verification could not start
// in time: the queue was full, or the wait exceeded the pool's bound. It is
// the server's load, not the client's fault, and must not count as a failed
// login.
var ErrBusy = errors.New("auth: server busy verifying passwords")

// VerifyPool bounds how many password verifications run at once. A password
// hash is deliberately expensive (argon2id: tens of milliseconds and 19 MiB
// each; SHA-crypt: time in proportion to the password's length), so without
// a bound N parallel logins cost N times the memory and all the CPU. Every
// verification goes through Do, which runs it in the caller's goroutine once
// one of the pool's slots is free, so at most Size verifications run at any
// moment (one per core by default: more would only share the cores and hold
// more memory). Callers beyond that wait in a bounded queue, each for a
// bounded time; beyond either bound Do refuses at once with ErrBusy.
// Safe for concurrent use.
type VerifyPool struct {
	slots   chan struct{} // a token per running verification
	queue   chan struct{} // a token per caller inside Do (waiting or running)
	maxWait time.Duration

	running   atomic.Int64
	peak      atomic.Int64
	completed atomic.Uint64
	refused   atomic.Uint64
}

// NewVerifyPool returns a pool of size slots (runtime.GOMAXPROCS(0) if
// size <= 0) in which at most queue further callers wait (4 per slot if
// queue <= 0), each for at most maxWait (10 seconds if maxWait <= 0).
func NewVerifyPool(size, queue int, maxWait time.Duration) *VerifyPool {
	if size <= 0 {
		size = runtime.GOMAXPROCS(0)
	}
	if queue <= 0 {
		queue = 4 * size
	}
	if maxWait <= 0 {
		maxWait = 10 * time.Second
	}
	return &VerifyPool{
		slots:   make(chan struct{}, size),
		queue:   make(chan struct{}, size+queue),
		maxWait: maxWait,
	}
}

// Do runs fn once a slot is free. It returns ErrBusy without running fn
// when the queue is full or no slot freed within the pool's wait bound, and
// ctx's error if ctx ends first.
func (p *VerifyPool) Do(ctx context.Context, fn func()) error {
	select {
	case p.queue <- struct{}{}:
	default:
		p.refused.Add(1)
		return ErrBusy
	}
	defer func() { <-p.queue }()
	select {
	case p.slots <- struct{}{}:
	default:
		t := time.NewTimer(p.maxWait)
		defer t.Stop()
		select {
		case p.slots <- struct{}{}:
		case <-t.C:
			p.refused.Add(1)
			return ErrBusy
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-p.slots }()
	n := p.running.Add(1)
	for {
		old := p.peak.Load()
		if n <= old || p.peak.CompareAndSwap(old, n) {
			break
		}
	}
	defer func() {
		p.running.Add(-1)
		p.completed.Add(1)
	}()
	fn()
	return nil
}

// Size is how many verifications may run at once.
func (p *VerifyPool) Size() int { return cap(p.slots) }

// Running is how many verifications run now.
func (p *VerifyPool) Running() int { return int(p.running.Load()) }

// Peak is the most verifications that ever ran at once.
func (p *VerifyPool) Peak() int { return int(p.peak.Load()) }

// Completed counts verifications run.
func (p *VerifyPool) Completed() uint64 { return p.completed.Load() }

// Refused counts calls that returned ErrBusy.
func (p *VerifyPool) Refused() uint64 { return p.refused.Load() }

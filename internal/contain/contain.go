// Package contain keeps a failure in one goroutine of the data path from
// escaping: a panic is recovered, logged with its stack and counted, and a
// loop whose reads keep failing backs off instead of spinning.
//
// Nothing here runs per packet: a goroutine defers one recover for its
// whole life, and a read loop touches its Backoff only on an error (Reset
// on success is one store).
package contain

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Read-error backoff bounds: a read that fails waits ReadMin, each further
// failure in a row twice as long, up to ReadMax.
const (
	ReadMin = time.Millisecond
	ReadMax = time.Second
)

// Backoff is a bounded exponential delay for a loop whose every iteration
// fails. The zero value uses ReadMin and ReadMax.
type Backoff struct {
	Min, Max time.Duration
	d        time.Duration
}

// Next returns how long to wait after one more failure in a row: Min
// first, then twice the last, up to Max.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = ReadMin
	}
	if hi <= 0 {
		hi = ReadMax
	}
	if b.d == 0 {
		b.d = lo
	} else {
		b.d = min(2*b.d, hi)
	}
	return b.d
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.d = 0 }

// PanicError is what a recovered panic becomes: where it happened, the
// value it panicked with and the goroutine's stack at that moment.
type PanicError struct {
	Where string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic in %s: %v", e.Where, e.Value) }

// Recovered turns v, a value recover returned, into a PanicError, logs it
// at error level with its stack and adds one to count (if not nil). Call
// it from the deferred function that called recover:
//
//	defer func() {
//		if v := recover(); v != nil {
//			err = contain.Recovered(log, "sender", v, &panics)
//		}
//	}()
func Recovered(log *slog.Logger, where string, v any, count *atomic.Uint64, args ...any) *PanicError {
	pe := &PanicError{Where: where, Value: v, Stack: debug.Stack()}
	if count != nil {
		count.Add(1)
	}
	if log != nil {
		log.Error("recovered from a panic", append([]any{"in", where, "panic", fmt.Sprint(v), "stack", string(pe.Stack)}, args...)...)
	}
	return pe
}

// Loop runs loop until it returns. A panic in it is recovered, logged with
// its stack and counted in panics, and loop runs again after a backoff
// (Min 1 ms, doubling up to 1 s; back to 1 ms when the last run lasted
// longer than that), so that a panic that recurs at once cannot spin.
// A goroutine shared by all sessions (a socket or TUN reader) runs this
// way: restarted, it serves the others again.
func Loop(log *slog.Logger, where string, panics *atomic.Uint64, loop func()) {
	var b Backoff
	for {
		start := time.Now()
		if runOnce(log, where, panics, loop) {
			return
		}
		if time.Since(start) > ReadMax {
			b.Reset()
		}
		d := b.Next()
		if log != nil {
			log.Warn("restarting after a panic", "in", where, "retry-in", d.String())
		}
		time.Sleep(d)
	}
}

// runOnce runs loop and reports whether it returned (rather than panicked).
func runOnce(log *slog.Logger, where string, panics *atomic.Uint64, loop func()) (returned bool) {
	defer func() {
		if v := recover(); v != nil {
			Recovered(log, where, v, panics)
		}
	}()
	loop()
	return true
}

package contain

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	var got []time.Duration
	for range 13 {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != ReadMin {
		t.Fatalf("after Reset: %v", d)
	}
	c := Backoff{Min: 5 * time.Millisecond, Max: 12 * time.Millisecond}
	if a, b, d := c.Next(), c.Next(), c.Next(); a != 5*time.Millisecond || b != 10*time.Millisecond || d != 12*time.Millisecond {
		t.Fatalf("custom bounds: %v %v %v", a, b, d)
	}
}

// TestLoopRestartsAfterPanic: a loop that panics is restarted (after a
// backoff), each panic logged with its stack and counted; a loop that
// returns is not run again.
func TestLoopRestartsAfterPanic(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var panics atomic.Uint64
	runs := 0
	Loop(log, "test-loop", &panics, func() {
		runs++
		if runs <= 3 {
			panic("boom")
		}
	})
	if runs != 4 || panics.Load() != 3 {
		t.Fatalf("runs %d, panics %d; want 4 and 3", runs, panics.Load())
	}
	out := buf.String()
	if !strings.Contains(out, "panic=boom") || !strings.Contains(out, "contain_test.go") || !strings.Contains(out, "in=test-loop") {
		t.Fatalf("log lacks the panic, its stack or where:\n%s", out)
	}
}

// TestLoopBacksOff: a loop that panics every time it starts is restarted
// a bounded number of times, not in a spin.
func TestLoopBacksOff(t *testing.T) {
	var panics atomic.Uint64
	stop := time.Now().Add(200 * time.Millisecond)
	Loop(nil, "spin", &panics, func() {
		if time.Now().Before(stop) {
			panic("again")
		}
	})
	// 1+2+4+...+128 ms = 255 ms: at most 8 restarts fit into 200 ms.
	if n := panics.Load(); n == 0 || n > 9 {
		t.Fatalf("%d panics in 200 ms", n)
	}
}

func TestRecovered(t *testing.T) {
	var n atomic.Uint64
	var pe *PanicError
	func() {
		defer func() {
			if v := recover(); v != nil {
				pe = Recovered(nil, "here", v, &n)
			}
		}()
		var m map[string]int
		m["x"] = 1 // a runtime error
	}()
	if pe == nil || n.Load() != 1 || pe.Where != "here" || !strings.Contains(pe.Error(), "panic in here: assignment to entry in nil map") || len(pe.Stack) == 0 {
		t.Fatalf("got %+v, count %d", pe, n.Load())
	}
}

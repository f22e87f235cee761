package hist

import (
	"testing"
	"time"
)

func TestLatency(t *testing.T) {
	var h Latency
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Second, time.Minute, -time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 6 {
		t.Fatalf("count %d, want 6", s.Count)
	}
	// 0.001 holds 500µs, 1ms (bounds are inclusive) and the negative one.
	want := map[float64]uint64{0.001: 3, 0.0025: 3, 0.005: 4, 1: 4, 2.5: 5, 10: 5}
	for b, n := range want {
		if s.Buckets[b] != n {
			t.Errorf("bucket le=%v: %d, want %d", b, s.Buckets[b], n)
		}
	}
	wantSum := (500*time.Microsecond + time.Millisecond + 3*time.Millisecond + 2*time.Second + time.Minute).Seconds()
	if s.Sum < wantSum-1e-9 || s.Sum > wantSum+1e-9 {
		t.Errorf("sum %v, want %v", s.Sum, wantSum)
	}
}

package client

import (
	"testing"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	for _, pick := range []struct {
		name string
		rand func(int64) int64
		lo   bool
	}{{"low", func(int64) int64 { return 0 }, true}, {"high", func(n int64) int64 { return n - 1 }, false}} {
		b := &backoff{d: backoffFirst, rand: pick.rand}
		d := backoffFirst
		for i := range 10 {
			got := b.next()
			want := d / 2
			if !pick.lo {
				want = d
			}
			if got != want {
				t.Fatalf("%s: wait %d = %s, want %s", pick.name, i, got, want)
			}
			d = min(2*d, backoffMax)
		}
	}
	// The real source stays within [d/2, d].
	b := newBackoff()
	d := backoffFirst
	for range 20 {
		got := b.next()
		if got < d/2 || got > d {
			t.Fatalf("wait %s outside [%s, %s]", got, d/2, d)
		}
		d = min(2*d, backoffMax)
	}
	if b.d != backoffMax {
		t.Fatalf("backoff not capped: %s", b.d)
	}
}

package loadgen

import (
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, ns := range []uint64{0, 1, 15, 16, 17, 31, 32, 1000, 123456789, 1 << 40, 1<<63 - 1} {
		i := bucketOf(ns)
		if up := bucketUpper(i); ns > up {
			t.Fatalf("%d in bucket %d whose upper bound is %d", ns, i, up)
		}
		if i > 0 && bucketUpper(i-1) >= ns {
			t.Fatalf("%d in bucket %d but bucket %d reaches %d", ns, i, i-1, bucketUpper(i-1))
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.07 {
			t.Errorf("q%.2f = %v, want %v (+6%%)", c.q, got, c.want)
		}
	}
	if h.Max() != time.Second || h.Count() != 1000 {
		t.Fatalf("max %v count %d", h.Max(), h.Count())
	}
}

func TestHistogramAddAllocs(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(100, func() { h.Add(time.Millisecond) }); n != 0 {
		t.Fatalf("Add allocates %.0f times", n)
	}
}

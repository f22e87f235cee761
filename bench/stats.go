package bench

import (
	"math"
	"sort"
)

// Summary is the median and the spread (min-max) of repeated
// measurements. N is how many values went in; with N == 0 the fields are
// NaN.
type Summary struct {
	N                int
	Median, Min, Max float64
}

// Summarize computes the median, minimum and maximum of xs, ignoring NaN
// values (measurements that could not be taken).
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sort.Float64s(v)
	s := Summary{N: len(v), Min: v[0], Max: v[len(v)-1]}
	if n := len(v); n%2 == 1 {
		s.Median = v[n/2]
	} else {
		s.Median = (v[n/2-1] + v[n/2]) / 2
	}
	return s
}

// Ratio is a's median over b's, NaN when either is missing or b is 0.
func Ratio(a, b Summary) float64 {
	if a.N == 0 || b.N == 0 || b.Median == 0 {
		return math.NaN()
	}
	return a.Median / b.Median
}

// CPUPerGB is CPU seconds per gigabyte (1e9 bytes) moved, NaN when the
// CPU time was not measured or nothing moved.
func CPUPerGB(cpuSeconds float64, bytes int64) float64 {
	if math.IsNaN(cpuSeconds) || bytes <= 0 {
		return math.NaN()
	}
	return cpuSeconds / (float64(bytes) / 1e9)
}

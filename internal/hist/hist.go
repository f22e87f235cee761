// Package hist is a latency histogram with fixed buckets and atomic
// counts: Observe is cheap and lock-free, and a reader (a metrics scrape)
// takes a Snapshot whenever it likes. The zero value is ready to use.
package hist

import (
	"sync/atomic"
	"time"
)

// Bounds are the upper bounds of the buckets in seconds, chosen for
// handshakes: a few milliseconds on a LAN to seconds over a lossy path.
var Bounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Latency counts durations into Bounds (and one overflow bucket).
type Latency struct {
	counts [len(Bounds) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

// Observe records one duration.
func (h *Latency) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	s := d.Seconds()
	i := 0
	for i < len(Bounds) && s > Bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(d))
}

// Snapshot is a histogram as Prometheus wants it.
type Snapshot struct {
	Count   uint64
	Sum     float64            // seconds
	Buckets map[float64]uint64 // upper bound -> cumulative count
}

// Snapshot reads the counts. The total is the sum of the buckets read, so
// the cumulative counts are consistent with Count even while observations
// go on.
func (h *Latency) Snapshot() Snapshot {
	s := Snapshot{Buckets: make(map[float64]uint64, len(Bounds))}
	var cum uint64
	for i, b := range Bounds {
		cum += h.counts[i].Load()
		s.Buckets[b] = cum
	}
	s.Count = cum + h.counts[len(Bounds)].Load()
	s.Sum = time.Duration(h.sumNs.Load()).Seconds()
	return s
}

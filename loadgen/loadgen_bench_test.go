package loadgen

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// benchSessions is how many idle sessions BenchmarkIdleSessionMemory holds
// against the in-process vpnd (in a child process).
const benchSessions = 100

// BenchmarkIdleSessionMemory reports the generator's own memory and
// goroutines per idle session (TLS and DTLS up, no traffic): what decides
// whether 10,000 sessions fit in one process.
func BenchmarkIdleSessionMemory(b *testing.B) {
	ts := newChildServer(b)
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rss0 := selfRSS()
		g0 := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		cfg := ts.config(benchSessions)
		// Few logins at once: vpnd's login throttle refuses correct
		// logins that wait behind many others (issue #11 item 3).
		cfg.Parallel = 4
		cfg.Duration = 0
		done := make(chan *Summary)
		cfg.Stats = &Stats{}
		go func() {
			sum, _ := Run(ctx, cfg)
			done <- sum
		}()
		deadline := time.Now().Add(30 * time.Second)
		for (cfg.Stats.Up.Load() < benchSessions || cfg.Stats.DTLSUp.Load() < benchSessions) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		rss := float64(selfRSS()) - float64(rss0)
		g := runtime.NumGoroutine() - g0
		if p := os.Getenv("LOADGEN_HEAPPROFILE"); p != "" {
			f, _ := os.Create(p)
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		cancel()
		sum := <-done
		if sum.MaxUp != benchSessions || sum.DTLSUpAtEnd != benchSessions {
			b.Fatalf("up %d DTLS %d (ok %d, not offered %d), failures %v", sum.MaxUp, sum.DTLSUpAtEnd, sum.DTLSOK, sum.DTLSNotOff, sum.Failures)
		}
		heap := float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)
		b.ReportMetric(heap/benchSessions/1024, "heap+stack-KiB/session")
		b.ReportMetric(rss/benchSessions/1024, "RSS-KiB/session")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/benchSessions/1024, "stack-KiB/session")
		b.ReportMetric(float64(g)/benchSessions, "goroutines/session")
	}
}

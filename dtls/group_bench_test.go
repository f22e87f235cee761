package dtls

import (
	"fmt"
	"sync"
	"testing"
)

// groupBenchSessions is how many sessions send upstream at once in
// BenchmarkPumpSessionsUp.
const groupBenchSessions = 16

// BenchmarkPumpSessionsUp: groupBenchSessions clients send batches of
// packets to a server reading an SO_REUSEPORT group of 1 or 2 sockets (one
// reader each), all at once. It answers whether a reader per socket raises
// the server's upstream throughput for many sessions; the clients' sealing
// runs on the same cores. One op is one batch of pumpBatch packets from
// each session.
func BenchmarkPumpSessionsUp(b *testing.B) {
	for _, sockets := range []int{1, 2} {
		b.Run(fmt.Sprintf("sockets=%d", sockets), func(b *testing.B) {
			s := newTestServerGroup(b, false, sockets)
			// Every session here shares the test server's App-ID.
			s.l.appIDLimit = newRateLimiter[[AppIDLen]byte](1e9, 1e9, limiterEntries)
			clients := make([]*ClientChannel, groupBenchSessions)
			for i := range clients {
				clients[i], _ = s.connectOwn(b, s.addr)
			}
			s.tun.discard.Store(true)
			b.SetBytes(groupBenchSessions * pumpBatch * pumpPktSize)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					bufs := pumpPackets()
					for i := range b.N {
						// Each session keeps at most pumpWindow/
						// groupBenchSessions+1 batches in flight, so
						// loopback's buffers do not overflow.
						waitCount(b, "server", s.tun.nDiscard.Load,
							int64(max(0, i-pumpWindow/groupBenchSessions-1))*pumpBatch*groupBenchSessions)
						renew(bufs)
						if err := c.WritePackets(bufs, room); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			waitCount(b, "server", s.tun.nDiscard.Load, int64(b.N)*pumpBatch*groupBenchSessions)
			b.StopTimer()
			b.ReportMetric(float64(sockets), "sockets")
		})
	}
}

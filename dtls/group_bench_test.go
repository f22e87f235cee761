package dtls

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/udp"
)

// groupBenchSessions is how many sessions send upstream at once in
// BenchmarkPumpSessionsUp.
const groupBenchSessions = 16

// processCPU is the CPU time the test process used so far, user and
// system: a measure other processes on the machine disturb less than
// throughput.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

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
			cpu0 := processCPU()
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
			pkts := float64(b.N * pumpBatch * groupBenchSessions)
			b.ReportMetric(float64(processCPU()-cpu0)/pkts, "cpu-ns/pkt")
			b.ReportMetric(float64(sockets), "sockets")
		})
	}
}

// BenchmarkServerOpenSessions measures the server's side alone:
// groupBenchSessions clients send records sealed before the timer starts
// (so no client crypto competes for the cores), from one goroutine with
// sendmmsg and GSO, to
// a listener on a group of 1 or 2 sockets. Run it with a fixed count
// (-benchtime=200x): each op's records are made in advance, about 1.5 MB
// per op. One op is a batch of pumpBatch records from each session.
func BenchmarkServerOpenSessions(b *testing.B) {
	for _, sockets := range []int{1, 2} {
		b.Run(fmt.Sprintf("sockets=%d", sockets), func(b *testing.B) {
			conns, err := udp.ListenGroup("127.0.0.1:0", sockets)
			if err != nil {
				b.Fatal(err)
			}
			tun := &tunRecorder{}
			tun.discard.Store(true)
			l := NewListener(ListenerConfig{Conn: conns[0], Readers: conns[1:], Sink: tun, Log: quietLog(),
				Find: func([]byte) (Match, bool) { return Match{}, false }})
			done := make(chan error, 1)
			go func() { done <- l.Serve() }()
			b.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
				<-done
			})
			srv := net.UDPAddrFromAddrPort(conns[0].LocalAddr().(*net.UDPAddr).AddrPort())
			rng := rand.New(rand.NewPCG(5, 5))
			pkt := ipv4Packet(rng, pumpPktSize)
			senders := make([]*udp.Conn, groupBenchSessions)
			batches := make([][][]udp.Message, groupBenchSessions)
			for k := range senders {
				uc := listenUDP(b, "127.0.0.1:0")
				senders[k] = udp.New(uc)
				_, s := roamPeer(b, l, uc.LocalAddr().(*net.UDPAddr).AddrPort(), byte(k))
				batches[k] = make([][]udp.Message, b.N)
				for i := range b.N {
					msgs := make([]udp.Message, pumpBatch)
					for j := range msgs {
						msgs[j].Buffers = [][]byte{sealFrom(b, s, cstp.TypeData, pkt)}
						msgs[j].Addr = srv
					}
					batches[k][i] = msgs
				}
			}
			b.SetBytes(groupBenchSessions * pumpBatch * pumpPktSize)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			// One sender for all sessions: the senders' waiting must not
			// take the cores from the readers.
			writers := make([]*udp.Writer, len(senders))
			for k, c := range senders {
				writers[k] = c.NewWriter()
			}
			for i := range b.N {
				waitCount(b, "server", tun.nDiscard.Load,
					int64(max(0, i-pumpWindow/groupBenchSessions-1))*pumpBatch*groupBenchSessions)
				for k, w := range writers {
					if err := w.WriteBatch(batches[k][i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			waitCount(b, "server", tun.nDiscard.Load, int64(b.N)*pumpBatch*groupBenchSessions)
			b.StopTimer()
			pkts := float64(b.N * pumpBatch * groupBenchSessions)
			b.ReportMetric(float64(processCPU()-cpu0)/pkts, "cpu-ns/pkt")
			b.ReportMetric(float64(l.Counters.Coalesced.Load())/float64(b.N*pumpBatch*groupBenchSessions), "coalesced/pkt")
		})
	}
}

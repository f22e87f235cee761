package dtls

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// The pump benchmarks move batches of 1400-byte packets through the whole
// DTLS data path over loopback UDP: seal in place, sendmmsg with UDP GSO,
// recvmmsg with UDP GRO, demultiplexing, replay check, open in place, and
// the hand-off to the TUN device (a double that counts). Bytes/s is packet
// payload delivered; allocs/op is per batch of pumpBatch packets.

const (
	pumpBatch   = 64
	pumpPktSize = 1400
	// pumpWindow is how many batches may be in flight: enough to keep both
	// ends busy, few enough that loopback's socket buffers never overflow.
	pumpWindow = 24
)

func pumpPackets() [][]byte {
	rng := rand.New(rand.NewPCG(3, 3))
	pkts := make([][]byte, pumpBatch)
	for i := range pkts {
		pkts[i] = ipv4Packet(rng, pumpPktSize)
	}
	return withRoom(pkts)
}

// renew makes sealed buffers packets again: sealing in place overwrote
// the plaintext, and the server's Check wants an IPv4 version nibble.
func renew(bufs [][]byte) {
	for _, b := range bufs {
		b[room] = 0x45
	}
}

func waitCount(b *testing.B, what string, n func() int64, want int64) {
	deadline := time.Now().Add(5 * time.Second)
	for n() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d packets arrived (loss on loopback?)", what, n(), want)
		}
		runtime.Gosched()
	}
}

func BenchmarkPumpClientToServer(b *testing.B) {
	s := newTestServer(b, false)
	c, _ := s.connect(b, s.addr)
	s.tun.discard.Store(true)
	bufs := pumpPackets()
	b.SetBytes(pumpBatch * pumpPktSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		waitCount(b, "server", s.tun.nDiscard.Load, int64(max(0, i-pumpWindow))*pumpBatch)
		renew(bufs)
		if err := c.WritePackets(bufs, room); err != nil {
			b.Fatal(err)
		}
	}
	waitCount(b, "server", s.tun.nDiscard.Load, int64(b.N)*pumpBatch)
	b.StopTimer()
	b.ReportMetric(float64(s.l.Counters.Coalesced.Load())/float64(b.N*pumpBatch), "coalesced/pkt")
}

func BenchmarkPumpServerToClient(b *testing.B) {
	s := newTestServer(b, false)
	c, p := s.connect(b, s.addr)
	bufs := pumpPackets()
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		rbufs := make([][]byte, pumpBatch)
		for i := range rbufs {
			rbufs[i] = make([]byte, room+2048)
		}
		sizes := make([]int, pumpBatch)
		for {
			n, err := c.ReadPackets(rbufs, sizes, room)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	b.SetBytes(pumpBatch * pumpPktSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		waitCount(b, "client", got.Load, int64(max(0, i-pumpWindow))*pumpBatch)
		renew(bufs)
		if err := p.WritePackets(bufs, room); err != nil {
			b.Fatal(err)
		}
	}
	waitCount(b, "client", got.Load, int64(b.N)*pumpBatch)
	b.StopTimer()
	b.ReportMetric(float64(c.Stats().Coalesced.Load())/float64(b.N*pumpBatch), "coalesced/pkt")
	c.Close()
	<-done
}

package tun_test

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kvpn/internal/testenv"
)

// mqSenders is how many UDP flows BenchmarkTUNQueues sends into the TUN at
// once, one goroutine each: enough distinct flows for the kernel to spread
// them over the queues (tun_automq_select_queue hashes the flow).
const mqSenders = 8

// mqWindow is how long each BenchmarkTUNQueues run counts packets.
const mqWindow = 3 * time.Second

// openQueues creates a TUN named name with IFF_MULTI_QUEUE and n queues:
// one fd per queue, each attached by its own TUNSETIFF on the same name
// (Documentation/networking/tuntap.rst, "Multiqueue tuntap interface").
func openQueues(tb testing.TB, name string, n int) []*os.File {
	tb.Helper()
	var fds []*os.File
	for range n {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			tb.Fatal(err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			tb.Fatalf("TUNSETIFF %s (IFF_MULTI_QUEUE): %v", name, err)
		}
		// Non-blocking, so the runtime poller waits for it and Close
		// unblocks its reader.
		if err := unix.SetNonblock(fd, true); err != nil {
			tb.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), name)
		fds = append(fds, f)
		tb.Cleanup(func() { f.Close() })
	}
	return fds
}

// BenchmarkTUNQueues measures how many packets/s the kernel hands to
// kvpn through a TUN with 1 and with 2 queues, a reader goroutine per
// queue, while mqSenders local UDP flows route 1400-byte packets into it:
// the question of issue #11 item 5, whether a second TUN queue pays on
// this machine's 2 cores (the senders share them with the readers, as
// the kernel's forwarding shares them with vpnd's in a real server).
func BenchmarkTUNQueues(b *testing.B) {
	testenv.RequireNetNS(b)
	for _, queues := range []int{1, 2} {
		b.Run(fmt.Sprintf("queues=%d", queues), func(b *testing.B) {
			name := fmt.Sprintf("mq%d", queues)
			fds := openQueues(b, name, queues)
			link, err := netlink.LinkByName(name)
			if err != nil {
				b.Fatal(err)
			}
			addr, _ := netlink.ParseAddr("10.98.0.1/16")
			if err := netlink.AddrAdd(link, addr); err != nil {
				b.Fatal(err)
			}
			if err := netlink.LinkSetUp(link); err != nil {
				b.Fatal(err)
			}
			var got atomic.Int64
			var readers sync.WaitGroup
			for _, f := range fds {
				readers.Go(func() {
					buf := make([]byte, 65536)
					for {
						if _, err := f.Read(buf); err != nil {
							return
						}
						got.Add(1)
					}
				})
			}
			stop := make(chan struct{})
			var senders sync.WaitGroup
			payload := make([]byte, 1400-28)
			for i := range mqSenders {
				c, err := net.Dial("udp4", fmt.Sprintf("10.98.%d.%d:%d", 1+i/200, 2+i%200, 9000+i))
				if err != nil {
					b.Fatal(err)
				}
				senders.Go(func() {
					defer c.Close()
					for {
						select {
						case <-stop:
							return
						default:
						}
						c.Write(payload)
					}
				})
			}
			time.Sleep(200 * time.Millisecond)
			var pps, cpuPerPkt float64
			for b.Loop() {
				n0, t0, c0 := got.Load(), time.Now(), cpuTime(b)
				time.Sleep(mqWindow)
				n := float64(got.Load() - n0)
				pps = n / time.Since(t0).Seconds()
				cpuPerPkt = (cpuTime(b) - c0).Seconds() * 1e6 / n
			}
			close(stop)
			senders.Wait()
			for _, f := range fds {
				f.Close() // unblocks its reader; the device goes with its last queue
			}
			readers.Wait()
			b.ReportMetric(pps, "pkts/s")
			b.ReportMetric(cpuPerPkt, "µs-cpu/pkt")
			b.ReportMetric(pps*1400*8/1e9, "Gbit/s")
		})
	}
}

// cpuTime is the process's user plus system CPU time (getrusage(2)): the
// senders' kernel work and the readers' together.
func cpuTime(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

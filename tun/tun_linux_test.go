package tun_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"kvpn/internal/testenv"
	"kvpn/tun"
)

// The device tests run in a private network namespace (see testenv).
func TestMain(m *testing.M) { os.Exit(testenv.MainInNetNS(m)) }

var (
	local  = netip.MustParseAddr("10.99.0.1") // the kernel's address on the TUN
	remote = netip.MustParseAddr("10.99.0.2") // a peer "behind" the TUN
)

const mtu = 1400

var backends = []tun.Backend{tun.BackendOffload, tun.BackendPlain}

func TestParseBackend(t *testing.T) {
	for _, b := range backends {
		if got, err := tun.ParseBackend(string(b)); got != b || err != nil {
			t.Errorf("ParseBackend(%q) = %q, %v", b, got, err)
		}
	}
	if _, err := tun.ParseBackend("fast"); err == nil {
		t.Error("ParseBackend accepted an unknown name")
	}
}

func TestNewBuffers(t *testing.T) {
	bufs := tun.NewBuffers(3)
	for i, b := range bufs {
		if len(b) != tun.Headroom+tun.MaxPacketSize || cap(b) != len(b) {
			t.Fatalf("buffer %d: len %d cap %d", i, len(b), cap(b))
		}
	}
	// Appending to one buffer (as GRO coalescing does) must not overwrite
	// the next one.
	bufs[1][0] = 7
	_ = append(bufs[0][:len(bufs[0])], 1)
	if bufs[1][0] != 7 {
		t.Fatal("buffers share capacity")
	}
}

func TestCreateValidates(t *testing.T) {
	for _, c := range []struct {
		name string
		mtu  int
		b    tun.Backend
	}{
		{"", 67, tun.BackendPlain},
		{"", 65536, tun.BackendOffload},
		{"a-name-far-too-long", 1400, tun.BackendPlain},
		{"", 1400, "bogus"},
	} {
		if d, err := tun.Create(c.name, c.mtu, c.b); err == nil {
			d.Close()
			t.Errorf("Create(%q, %d, %q) succeeded", c.name, c.mtu, c.b)
		}
	}
}

// setup creates a TUN with local/24 on it, up, and a goroutine reading it
// whose batches (one per Read call, packets copied) arrive on the channel.
func setup(t *testing.T, backend tun.Backend) (tun.Device, <-chan [][]byte) {
	return setupReading(t, backend, nil)
}

// setupReading is setup with the reads done by ReadTaking(take) when take
// is not nil (the offload backend).
func setupReading(t *testing.T, backend tun.Backend, take func([]byte) bool) (tun.Device, <-chan [][]byte) {
	dev := setupDevice(t, backend)
	batches := make(chan [][]byte, 4096)
	read := dev.Read
	if take != nil {
		vd := dev.(tun.VirtioDevice)
		read = func(bufs [][]byte, sizes []int, offset int) (int, error) {
			return vd.ReadTaking(bufs, sizes, offset, take)
		}
	}
	go func() {
		defer close(batches)
		bufs := tun.NewBuffers(dev.BatchSize())
		sizes := make([]int, len(bufs))
		for {
			n, err := read(bufs, sizes, tun.Headroom)
			if err != nil && n == 0 {
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("Read: %v", err)
				}
				return
			}
			batch := make([][]byte, n)
			for i := range batch {
				batch[i] = bytes.Clone(bufs[i][tun.Headroom : tun.Headroom+sizes[i]])
			}
			batches <- batch
		}
	}()
	return dev, batches
}

// setupDevice creates a TUN with local/24 on it, up.
func setupDevice(t *testing.T, backend tun.Backend) tun.Device {
	testenv.RequireNetNS(t)
	dev, err := tun.Create("", mtu, backend)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	if !strings.HasPrefix(dev.Name(), "tun") || dev.MTU() != mtu {
		t.Errorf("Name %q MTU %d; want tunN and %d", dev.Name(), dev.MTU(), mtu)
	}
	link, err := netlink.LinkByName(dev.Name())
	if err != nil {
		t.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: local.AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return dev
}

// await returns the first batch holding a packet match accepts.
func await(t *testing.T, batches <-chan [][]byte, what string, match func(parsed) bool) [][]byte {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case batch, ok := <-batches:
			if !ok {
				t.Fatalf("device closed while waiting for %s", what)
			}
			for _, p := range batch {
				if q, ok := parse(p); ok && match(q) {
					return batch
				}
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// write sends packets through dev with tun.Headroom in front of each.
func write(t *testing.T, dev tun.Device, pkts ...[]byte) {
	t.Helper()
	bufs := tun.NewBuffers(len(pkts))
	for i, p := range pkts {
		bufs[i] = bufs[i][:tun.Headroom+copy(bufs[i][tun.Headroom:], p)]
	}
	if n, err := dev.Write(bufs, tun.Headroom); n != len(pkts) || err != nil {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(pkts))
	}
}

func TestKernelToDevice(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			_, batches := setup(t, b)
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote, 9999)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			var got parsed
			await(t, batches, "the UDP datagram", func(q parsed) bool {
				got = q
				return q.proto == protoUDP && q.dst.Port() == 9999
			})
			if got.src.Addr() != local || got.dst.Addr() != remote || string(got.payload) != "hello" {
				t.Errorf("got %v -> %v %q", got.src, got.dst, got.payload)
			}
			// The offload backend finishes CHECKSUM_PARTIAL packets.
			if !got.csumOK {
				t.Error("bad checksum")
			}
		})
	}
}

func TestDeviceToKernel(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			dev, _ := setup(t, b)
			ln, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			from := netip.AddrPortFrom(remote, 5555)
			write(t, dev, udpPacket(from, ln.LocalAddr().(*net.UDPAddr).AddrPort(), []byte("world")))
			ln.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			n, src, err := ln.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "world" || src != from {
				t.Errorf("received %q from %v", buf[:n], src)
			}
		})
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			testenv.RequireNetNS(t)
			before := runtime.NumGoroutine()
			dev, err := tun.Create("kvtclose0", mtu, b)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := dev.Read(tun.NewBuffers(dev.BatchSize()), make([]int, dev.BatchSize()), tun.Headroom)
				done <- err
			}()
			time.Sleep(50 * time.Millisecond)
			if err := dev.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("Read after Close: %v; want os.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock Read")
			}
			if err := dev.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			// The interface is gone with its fd, and no goroutine stays.
			if _, err := netlink.LinkByName("kvtclose0"); err == nil {
				t.Error("interface still exists after Close")
			}
			// (Goroutines of earlier tests and our Read goroutine finish
			// asynchronously: allow them a moment.)
			after := runtime.NumGoroutine()
			for i := 0; i < 100 && after > before; i++ {
				time.Sleep(10 * time.Millisecond)
				after = runtime.NumGoroutine()
			}
			if after > before {
				t.Errorf("goroutines: %d before, %d after Close", before, after)
			}
		})
	}
}

// sendFlight has the kernel connect to remote:port through dev (the test
// answers the SYN it reads from batches) and then write 256 KiB, which it
// sends as one TCP flight (initial cwnd 10, never ACKed here) until the
// test ends. It returns the SYN: the flight's first byte is syn.seq+1.
func sendFlight(t *testing.T, dev tun.Device, batches <-chan [][]byte, port uint16) parsed {
	t.Helper()
	peer := netip.AddrPortFrom(remote, port)
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := net.DialTimeout("tcp4", peer.String(), 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	var syn parsed
	await(t, batches, "SYN", func(q parsed) bool { syn = q; return q.proto == protoTCP && q.flags&tcpSYN != 0 })
	const isn = 1000
	write(t, dev, tcpPacket(peer, syn.src, isn, syn.seq+1, tcpSYN|tcpACK, mtu-40, nil))
	c := <-dialed
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })
	go c.Write(make([]byte, 256<<10)) // unblocked by Close
	return syn
}

// TestOffloadTSOSplit has the kernel send a TCP flight into the TUN: with
// TSO on, the kernel hands the device one super-packet, and Read must return
// it split into several MTU-sized, checksummed segments in one call.
func TestOffloadTSOSplit(t *testing.T) {
	dev, batches := setup(t, tun.BackendOffload)
	sendFlight(t, dev, batches, 8080)

	// The first flight (initial cwnd 10, never ACKed here) leaves as one or
	// a few GSO super-packets; wait for a Read that returned a split one.
	var segs []parsed
	for timeout := time.After(5 * time.Second); len(segs) < 2; {
		var batch [][]byte
		select {
		case batch = <-batches:
		case <-timeout:
			t.Fatal("no Read returned more than one data segment")
		}
		segs = segs[:0]
		for _, p := range batch {
			q, ok := parse(p)
			if !ok || q.proto != protoTCP || len(q.payload) == 0 {
				continue
			}
			if len(p) > mtu || !q.csumOK {
				t.Errorf("segment of %d bytes, checksum ok %v", len(p), q.csumOK)
			}
			if n := len(segs); n > 0 && q.seq != segs[n-1].seq+uint32(len(segs[n-1].payload)) {
				t.Errorf("segment %d: seq %d does not follow", n, q.seq)
			}
			segs = append(segs, q)
		}
	}
	t.Logf("one Read returned %d segments of %d bytes", len(segs), len(segs[0].payload))
}

// TestReadTakingWholeFrames: with ReadTaking, the TCP flight the kernel
// hands the device as super-packets is offered whole to take (which keeps
// it), valid frames of several segments that carry the stream in order,
// while the handshake's single packets still come out of the call split.
func TestReadTakingWholeFrames(t *testing.T) {
	frames := make(chan []byte, 64)
	var offered atomic.Int32
	take := func(frame []byte) bool {
		offered.Add(1)
		select {
		case frames <- bytes.Clone(frame):
		default:
		}
		return true
	}
	dev, batches := setupReading(t, tun.BackendOffload, take)
	syn := sendFlight(t, dev, batches, 8081)

	select {
	case f := <-frames:
		pkt, err := tun.CheckGSOFrame(f, mtu)
		if err != nil {
			t.Fatalf("taken frame refused: %v", err)
		}
		q, ok := parse(pkt)
		if !ok || q.proto != protoTCP || q.seq != syn.seq+1 {
			t.Errorf("taken frame: TCP %v, seq %d; want the flight's first byte, seq %d", ok && q.proto == protoTCP, q.seq, syn.seq+1)
		}
		if n := tun.GSOSegments(f); n < 2 {
			t.Errorf("taken frame stands for %d segments; want a super-packet", n)
		}
		t.Logf("first frame taken whole: %d bytes, %d segments", len(f), tun.GSOSegments(f))
	case <-time.After(5 * time.Second):
		t.Fatalf("no super-packet offered to take (%d offers)", offered.Load())
	}
	// Nothing taken comes out split as well.
	for len(batches) > 0 {
		for _, p := range <-batches {
			if q, ok := parse(p); ok && q.proto == protoTCP && len(q.payload) > 0 && q.seq == syn.seq+1 {
				t.Error("the taken flight's first segment was also returned as a packet")
			}
		}
	}
}

// TestWriteTCPStream has the test play a TCP client behind the TUN and write a
// run of consecutive data segments in one Write call, which the offload
// backend coalesces (GRO) into super-packets. The kernel must accept them and
// deliver the exact byte stream.
func TestWriteTCPStream(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			dev, batches := setup(t, b)
			ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			server := ln.Addr().(*net.TCPAddr).AddrPort()
			client := netip.AddrPortFrom(remote, 40000)

			const isn = 5000
			write(t, dev, tcpPacket(client, server, isn, 0, tcpSYN, mtu-40, nil))
			var synack parsed
			await(t, batches, "SYN-ACK", func(q parsed) bool {
				synack = q
				return q.proto == protoTCP && q.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK && q.dst == client
			})
			ack := synack.seq + 1
			write(t, dev, tcpPacket(client, server, isn+1, ack, tcpACK, 0, nil))
			ln.SetDeadline(time.Now().Add(5 * time.Second))
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			const segSize, nsegs = 1000, 40
			want := make([]byte, segSize*nsegs)
			for i := range want {
				want[i] = byte(i * 7)
			}
			var pkts [][]byte
			for i := range nsegs {
				flags := byte(tcpACK)
				if i == nsegs-1 {
					flags |= tcpPSH
				}
				pkts = append(pkts, tcpPacket(client, server, uint32(isn+1+i*segSize), ack, flags, 0, want[i*segSize:(i+1)*segSize]))
			}
			write(t, dev, pkts...)

			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("stream corrupted")
			}
		})
	}
}

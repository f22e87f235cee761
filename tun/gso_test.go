package tun_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"kvpn/tun"
)

// gsoFrame builds a frame: a virtio-net header for a TCP/IPv4 packet with
// data, as the kernel would hand it over.
func gsoFrame(gsoType byte, gsoSize int, data []byte) []byte {
	pkt := tcpPacket(netip.MustParseAddrPort("10.0.0.1:1000"), netip.MustParseAddrPort("10.0.0.2:2000"), 1, 1, tcpACK, 0, data)
	hdr := make([]byte, tun.VirtioHdrLen)
	hdr[0] = 1 // NEEDS_CSUM
	hdr[1] = gsoType
	binary.LittleEndian.PutUint16(hdr[2:], 54)
	binary.LittleEndian.PutUint16(hdr[4:], uint16(gsoSize))
	binary.LittleEndian.PutUint16(hdr[6:], 20)
	binary.LittleEndian.PutUint16(hdr[8:], 16)
	return append(hdr, pkt...)
}

func TestCheckGSOFrame(t *testing.T) {
	const mtu = 1400
	ok := []struct {
		name  string
		frame []byte
	}{
		{"TCPv4 super-packet", gsoFrame(1, mtu-40, make([]byte, 10*(mtu-40)))},
		{"TCPv4 with ECN", gsoFrame(0x81, 1000, make([]byte, 5000))},
		{"single packet, checksum offload", gsoFrame(0, 0, make([]byte, 500))},
	}
	for _, tc := range ok {
		pkt, err := tun.CheckGSOFrame(tc.frame, mtu)
		if err != nil || len(pkt) != len(tc.frame)-tun.VirtioHdrLen {
			t.Errorf("%s: %v", tc.name, err)
		}
		if got := binary.LittleEndian.Uint16(tc.frame[2:]); got != 40 {
			t.Errorf("%s: hdr_len %d after the check, want the real 40", tc.name, got)
		}
	}
	mod := func(f []byte, fn func([]byte)) []byte { fn(f); return f }
	bad := []struct {
		name  string
		frame []byte
	}{
		{"short", make([]byte, 20)},
		{"segments over the MTU", gsoFrame(1, mtu, make([]byte, 3*mtu))},
		{"zero gso_size", gsoFrame(1, 0, make([]byte, 3000))},
		{"single packet over the MTU", gsoFrame(0, 0, make([]byte, mtu))},
		{"TCPv6 type for IPv4", gsoFrame(4, 1000, make([]byte, 3000))},
		{"UDP type for TCP", gsoFrame(5, 1000, make([]byte, 3000))},
		{"unknown type", gsoFrame(3, 1000, make([]byte, 3000))},
		{"unknown flag", mod(gsoFrame(1, 1000, make([]byte, 3000)), func(f []byte) { f[0] = 3 })},
		{"GSO without checksum offload", mod(gsoFrame(1, 1000, make([]byte, 3000)), func(f []byte) { f[0] = 0 })},
		{"checksum outside the TCP header", mod(gsoFrame(1, 1000, make([]byte, 3000)), func(f []byte) { f[8] = 200 })},
		{"IPv4 length mismatch", mod(gsoFrame(1, 1000, make([]byte, 3000)), func(f []byte) { f[tun.VirtioHdrLen+3]++ })},
		{"IP version 5", mod(gsoFrame(0, 0, make([]byte, 30)), func(f []byte) { f[tun.VirtioHdrLen] = 0x55 })},
	}
	for _, tc := range bad {
		if _, err := tun.CheckGSOFrame(tc.frame, mtu); !errors.Is(err, tun.ErrBadGSOFrame) {
			t.Errorf("%s: accepted (%v)", tc.name, err)
		}
	}
}

func FuzzCheckGSOFrame(f *testing.F) {
	f.Add(gsoFrame(1, 1360, make([]byte, 5000)))
	f.Add(gsoFrame(0, 0, make([]byte, 50)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		pkt, err := tun.CheckGSOFrame(frame, 1400)
		if err == nil && len(pkt) != len(frame)-tun.VirtioHdrLen {
			t.Fatalf("packet of %d bytes from a %d-byte frame", len(pkt), len(frame))
		}
	})
}

// TestReadGSO has the kernel send a TCP flight into an offload TUN:
// ReadGSOBatch returns it as super-packets that CheckGSOFrame accepts for the device's
// MTU, and none is larger than GSOMaxSize.
func TestReadGSO(t *testing.T) {
	dev := setupDevice(t, tun.BackendOffload)
	vd, ok := dev.(tun.VirtioDevice)
	if !ok {
		t.Fatal("the offload backend is not a VirtioDevice")
	}
	peer := netip.AddrPortFrom(remote, 8081)
	dialed := make(chan net.Conn, 1)
	go func() {
		c, _ := net.DialTimeout("tcp4", peer.String(), 5*time.Second)
		dialed <- c
	}()
	one := [][]byte{make([]byte, tun.VirtioHdrLen+tun.MaxPacketSize)}
	size := make([]int, 1)
	read := func() ([]byte, parsed) {
		n, err := vd.ReadGSOBatch(one, size)
		if err != nil || n != 1 {
			t.Fatalf("ReadGSOBatch of one = %d, %v", n, err)
		}
		frame := one[0][:size[0]]
		pkt, err := tun.CheckGSOFrame(frame, mtu)
		if err != nil {
			t.Fatalf("a frame from the kernel: %v", err)
		}
		q, _ := parse(pkt)
		return frame, q
	}
	for {
		_, q := read()
		if q.proto == protoTCP && q.flags&tcpSYN != 0 {
			write(t, dev, tcpPacket(peer, q.src, 1000, q.seq+1, tcpSYN|tcpACK, mtu-40, nil))
			break
		}
	}
	c := <-dialed
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	go c.Write(make([]byte, 256<<10)) // unblocked by Close
	// The rest with ReadGSOBatch: every frame of every batch is valid.
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, tun.VirtioHdrLen+tun.MaxPacketSize)
	}
	sizes := make([]int, len(bufs))
	for range 20 {
		n, err := vd.ReadGSOBatch(bufs, sizes)
		if err != nil || n < 1 {
			t.Fatalf("ReadGSOBatch = %d, %v", n, err)
		}
		for i := range n {
			frame := bufs[i][:sizes[i]]
			if _, err := tun.CheckGSOFrame(frame, mtu); err != nil {
				t.Fatalf("frame %d of a batch of %d: %v", i, n, err)
			}
			if len(frame)-tun.VirtioHdrLen > tun.GSOMaxSize {
				t.Fatalf("super-packet of %d bytes > GSOMaxSize", len(frame)-tun.VirtioHdrLen)
			}
			if frame[1] == 1 { // VIRTIO_NET_HDR_GSO_TCPV4
				t.Logf("a %d-byte super-packet of %d-byte segments (batch of %d)", len(frame)-tun.VirtioHdrLen, binary.LittleEndian.Uint16(frame[4:]), n)
				return
			}
		}
	}
	t.Fatal("no TCP super-packet in 20 batches")
}

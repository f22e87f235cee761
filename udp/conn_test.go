package udp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvpn/internal/race"
	"kvpn/internal/testenv"
)

// TestWriteBatchGSO sends runs of equal-size datagrams (coalesced with
// UDP_SEGMENT where the kernel allows) and checks that every datagram
// arrives whole and in order.
func TestWriteBatchGSO(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dst := rc.LocalAddr().(*net.UDPAddr)
	sizes := []int{1472, 1472, 1472, 1472, 900, 1472, 1472, 100, 60, 1472}
	msgs := make([]Message, len(sizes))
	for i, n := range sizes {
		msgs[i] = Message{Buffers: [][]byte{bytes.Repeat([]byte{byte(i)}, n)}, Addr: dst}
	}
	if err := sc.WriteBatch(msgs); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}
	buf := make([]byte, 65536)
	for i, n := range sizes {
		rc.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, _, err := rc.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if got != n || buf[0] != byte(i) || buf[got-1] != byte(i) {
			t.Fatalf("datagram %d: %d bytes starting %d, want %d bytes of %d", i, got, buf[0], n, i)
		}
	}
}

// TestWriteBatchGSONoAlloc: coalescing reuses its vectors.
func TestWriteBatchGSONoAlloc(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, err := rc.Read(buf); err != nil {
				return
			}
		}
	}()
	sc, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dst := rc.LocalAddr().(*net.UDPAddr)
	msgs := make([]Message, 16)
	for i := range msgs {
		msgs[i] = Message{Buffers: [][]byte{make([]byte, 1400)}, Addr: dst}
	}
	sc.WriteBatch(msgs)
	n := testing.AllocsPerRun(100, func() { sc.WriteBatch(msgs) })
	if n > 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

// TestSocketBuffers: a socket gets the receive and send buffers asked for
// (the kernel reports twice what was asked, socket(7)); KVPN_UDP_RCVBUF's
// parse refuses what is not a size of at least 64 KiB.
func TestSocketBuffers(t *testing.T) {
	testenv.RequireRoot(t) // SO_*BUFFORCE: net.core.rmem_max does not cap it
	c, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rcv, snd int
	rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if rcv != 2*receiveBuffer || snd != 2*SendBuffer {
		t.Errorf("SO_RCVBUF %d, SO_SNDBUF %d; want %d and %d", rcv, snd, 2*receiveBuffer, 2*SendBuffer)
	}
	for v, want := range map[string]int{"": 7, "1048576": 1 << 20, "65536": 65536, "65535": 7, "1M": 7, "-1": 7} {
		t.Setenv("KVPN_TEST_BYTES", v)
		if got := envBytes("KVPN_TEST_BYTES", 7); got != want {
			t.Errorf("envBytes(%q) = %d, want %d", v, got, want)
		}
	}
}

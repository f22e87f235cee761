package udp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"kvpn/internal/race"
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

package udp

import (
	"net"
	"testing"
	"time"
)

// TestListenGroup: 16 senders to a group of two sockets. Each sender's
// datagrams all reach one socket (the kernel hashes the 4-tuple), and the
// senders are spread over both (all 16 on one socket has probability
// 2^-15).
func TestListenGroup(t *testing.T) {
	conns, err := ListenGroup("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) != 2 || conns[0].LocalAddr().String() != conns[1].LocalAddr().String() {
		t.Fatalf("group: %d sockets, addresses %v and %v", len(conns), conns[0].LocalAddr(), conns[len(conns)-1].LocalAddr())
	}
	const senders, each = 16, 4
	var ports [senders]int
	for i := range senders {
		s, err := net.DialUDP("udp4", nil, conns[0].LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ports[i] = s.LocalAddr().(*net.UDPAddr).Port
		for range each {
			if _, err := s.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	socketOf := map[int]int{} // sender port -> socket index
	counts := map[int]int{}
	for k, c := range conns {
		msgs := make([]Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 16)}
		}
		for {
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := c.ReadBatch(msgs)
			if err != nil {
				break
			}
			for _, m := range msgs[:n] {
				port := m.Addr.(*net.UDPAddr).Port
				if prev, ok := socketOf[port]; ok && prev != k {
					t.Errorf("sender port %d reached sockets %d and %d", port, prev, k)
				}
				socketOf[port] = k
				counts[port]++
			}
		}
	}
	used := map[int]bool{}
	for _, p := range ports {
		if counts[p] != each {
			t.Errorf("sender port %d: %d datagrams arrived, want %d", p, counts[p], each)
		}
		used[socketOf[p]] = true
	}
	if len(used) != 2 {
		t.Errorf("all senders reached one socket of the group")
	}
}

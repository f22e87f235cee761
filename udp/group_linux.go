//go:build linux

package udp

import (
	"context"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxGroup bounds the sockets of a group: more readers than cores only
// add context switches.
const maxGroup = 8

// GroupSize is how many sockets ListenGroup opens by default: one per
// core the Go runtime uses (up to maxGroup), or KVPN_UDP_SOCKETS.
func GroupSize() int {
	if v, err := strconv.Atoi(os.Getenv("KVPN_UDP_SOCKETS")); err == nil && v >= 1 {
		return min(v, maxGroup)
	}
	return min(runtime.GOMAXPROCS(0), maxGroup)
}

// ListenGroup opens n sockets bound to the same address with
// SO_REUSEPORT. The kernel spreads incoming datagrams over them by a hash
// of the sender's address and port (net/ipv4/udp.c, reuseport_select_sock),
// so each client's datagrams always reach the same socket, and one reader
// per socket spreads decryption over cores without reordering a client's
// packets. The first socket is the group's address for sending. With n = 1
// it is Listen.
func ListenGroup(addr string, n int) ([]*Conn, error) {
	if n <= 1 {
		c, err := Listen(addr)
		if err != nil {
			return nil, err
		}
		return []*Conn{c}, nil
	}
	network, ua, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var conns []*Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		pc, err := lc.ListenPacket(context.Background(), network, ua.String())
		if err != nil {
			closeAll()
			return nil, err
		}
		c := New(pc.(*net.UDPConn))
		if len(conns) == 0 {
			// A port of 0 was bound to some free port: the rest join it.
			ua = c.LocalAddr().(*net.UDPAddr)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

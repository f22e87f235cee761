//go:build linux

package udp

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvmmsg is kvpn's own batched read: x/net's ReadBatch allocates a
// net.UDPAddr and its IP for every datagram, which this one does not. It
// keeps the message headers, address storage and returned addresses
// between calls; a Message's Addr is valid until the next read.
type recvmmsg struct {
	rc syscall.RawConn
	// fn is the system call, made once: a closure built per read would
	// be allocated per read. It reads nmsgs and sets n and errno.
	fn    func(fd uintptr) bool
	nmsgs int
	n     int
	errno unix.Errno

	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	addrs []net.UDPAddr
	ips   [][net.IPv6len]byte
}

func (r *recvmmsg) grow(msgs []Message) {
	nbuf := 0
	for i := range msgs {
		nbuf += len(msgs[i].Buffers)
	}
	if len(r.hdrs) < len(msgs) {
		r.hdrs = make([]unix.Mmsghdr, len(msgs))
		r.names = make([]unix.RawSockaddrInet6, len(msgs))
		r.addrs = make([]net.UDPAddr, len(msgs))
		r.ips = make([][net.IPv6len]byte, len(msgs))
	}
	if len(r.iovs) < nbuf {
		r.iovs = make([]unix.Iovec, nbuf)
	}
}

// read fills msgs from the socket: N, NN, Flags and Addr of each. It
// blocks (in the runtime's poller) until at least one datagram is there.
func (r *recvmmsg) read(c *Conn, msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	r.grow(msgs)
	iov := 0
	for i := range msgs {
		m := &msgs[i]
		h := &r.hdrs[i].Hdr
		*h = unix.Msghdr{}
		first := iov
		for _, b := range m.Buffers {
			if len(b) > 0 {
				r.iovs[iov].Base = &b[0]
				r.iovs[iov].SetLen(len(b))
				iov++
			}
		}
		if iov > first {
			h.Iov = &r.iovs[first]
			h.SetIovlen(iov - first)
		}
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		if len(m.OOB) > 0 {
			h.Control = &m.OOB[0]
			h.SetControllen(len(m.OOB))
		}
	}
	if r.rc == nil {
		rc, err := c.SyscallConn()
		if err != nil {
			return 0, err
		}
		r.rc = rc
		r.fn = r.syscall
	}
	r.nmsgs = len(msgs)
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	n := r.n
	if r.errno != 0 {
		return 0, &net.OpError{Op: "recvmmsg", Net: "udp", Source: c.LocalAddr(), Err: r.errno}
	}
	for i := range n {
		m, h := &msgs[i], &r.hdrs[i]
		m.N = int(h.Len)
		m.NN = int(h.Hdr.Controllen)
		m.Flags = int(h.Hdr.Flags)
		m.Addr = r.addr(i)
	}
	return n, nil
}

// syscall runs recvmmsg on fd; false asks the poller to wait until the
// socket is readable.
func (r *recvmmsg) syscall(fd uintptr) bool {
	v, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.nmsgs), 0, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.n, r.errno = int(v), e
	return true
}

// addr decodes the i-th source address into reused storage.
func (r *recvmmsg) addr(i int) net.Addr {
	sa := &r.names[i]
	a := &r.addrs[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		copy(r.ips[i][:4], sa4.Addr[:])
		a.IP = r.ips[i][:4]
		a.Port = port(sa4.Port)
		a.Zone = ""
	case unix.AF_INET6:
		r.ips[i] = sa.Addr
		a.IP = r.ips[i][:]
		a.Port = port(sa.Port)
		a.Zone = "" // scoped peers are not supported; scope ids would need a name lookup
	default:
		return nil
	}
	return a
}

// port converts a sockaddr's port, stored in network byte order.
func port(p uint16) int {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return int(b[0])<<8 | int(b[1])
}

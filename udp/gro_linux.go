//go:build linux

package udp

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

// OOBSize is the control-message space a Message's OOB needs for the
// UDP_GRO segment size the kernel reports with a coalesced datagram.
var OOBSize = unix.CmsgSpace(4)

// groDisabled is set by KVPN_UDP_NO_GRO=1.
var groDisabled = os.Getenv("KVPN_UDP_NO_GRO") == "1"

// EnableGRO asks the kernel to hand over runs of datagrams of one flow as
// one coalesced datagram (UDP_GRO, Linux 5.0): a UDP GSO send that crossed a
// veth stays one skb end to end, and a NIC's GRO batches stay batched.
// Readers that enable it must give each Message room for a 64 KiB datagram
// and OOBSize bytes of OOB, and split what they read with SegmentSize. It
// reports whether GRO is on (off with KVPN_UDP_NO_GRO=1 or on kernels
// without it).
func (c *Conn) EnableGRO() bool {
	if groDisabled {
		return false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return false
	}
	c.gro = true
	return true
}

// GRO reports whether EnableGRO turned coalescing on.
func (c *Conn) GRO() bool { return c.gro }

// SegmentSize returns the size of the datagrams coalesced into m (every
// one but the last has exactly this size), or 0 when m is one datagram. It
// reads the UDP_GRO control message in m.OOB[:m.NN] without allocating.
func SegmentSize(m *Message) int {
	b := m.OOB[:m.NN]
	hdr := unix.CmsgLen(0)
	for len(b) >= hdr {
		h := (*unix.Cmsghdr)(unsafePointer(b))
		l := int(h.Len)
		if l < hdr || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= hdr+4 {
			if n := int(binary.NativeEndian.Uint32(b[hdr:])); n > 0 && n < m.N {
				return n
			}
			return 0
		}
		sp := unix.CmsgSpace(l - hdr)
		if sp > len(b) {
			return 0
		}
		b = b[sp:]
	}
	return 0
}

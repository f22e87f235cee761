//go:build linux

package udp

import (
	"encoding/binary"
	"errors"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// maxGSOSegments is the kernel's limit of segments per UDP_SEGMENT send
// (UDP_MAX_SEGMENTS, include/linux/udp.h).
const maxGSOSegments = 64

// maxGSOBytes keeps one GSO send under the 64 KiB IP datagram limit.
const maxGSOBytes = 65000

// gsoDisabled turns UDP GSO off: by KVPN_UDP_NO_GSO=1, or after the kernel
// refused it with EIO (devices without TX checksumming do).
var gsoDisabled atomic.Bool

func init() {
	if os.Getenv("KVPN_UDP_NO_GSO") == "1" {
		gsoDisabled.Store(true)
	}
}

// gsoCmsg returns a control message setting UDP_SEGMENT to size.
func gsoCmsg(b []byte, size int) []byte {
	n := unix.CmsgSpace(2)
	if cap(b) < n {
		b = make([]byte, n)
	}
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafePointer(b))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}

// isGSOError reports errors after which GSO should be turned off.
func isGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}

//go:build linux

package ktlsbridge

import (
	"syscall"
	"unsafe"
)

// peekReadable is WaitRead's callback for syscall.RawConn.Read: it peeks at
// one byte without blocking (recv(2) MSG_PEEK|MSG_DONTWAIT) and reports
// false, so that the runtime's poller waits for readability, only on
// EAGAIN. Anything else (a byte, end of stream, an error; on a kTLS RX
// socket also EIO for a control record, kernel Documentation/networking/
// tls.rst) means a read will not block. A top-level function: passing it
// allocates nothing.
func peekReadable(fd uintptr) bool {
	var b [1]byte
	_, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e != syscall.EAGAIN && e != syscall.EINTR
}

//go:build linux

package ktlsbridge

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel TLS constants missing from x/sys/unix (include/uapi/linux/tls.h).
const (
	solTLS           = unix.SOL_TLS // 282
	tlsTX            = 1
	tlsRX            = 2
	tlsSetRecordType = 1 // cmsg type on send
	tlsGetRecordType = 2 // cmsg type on receive
)

// TLS content types (RFC 8446 section 5.1).
const (
	typeChangeCipherSpec = 20
	typeAlert            = 21
	typeHandshake        = 22
	typeApplicationData  = 23
)

// enableULP attaches the "tls" upper-layer protocol to a connected TCP
// socket. ENOENT means the kernel has no TLS support (module missing).
func enableULP(fd int) error {
	err := unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP, "tls")
	if err != nil {
		return fmt.Errorf("setsockopt TCP_ULP tls: %w", err)
	}
	return nil
}

// setCrypto hands one direction's keys to the kernel (TLS_TX or TLS_RX).
func setCrypto(fd, dir int, info []byte) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), solTLS, uintptr(dir),
		uintptr(unsafe.Pointer(&info[0])), uintptr(len(info)), 0)
	if errno != 0 {
		name := "TLS_TX"
		if dir == tlsRX {
			name = "TLS_RX"
		}
		return fmt.Errorf("setsockopt %s: %w", name, errno)
	}
	return nil
}

// kernelTX sends records through the kernel's TLS_TX: every write
// without MSG_MORE becomes exactly one record, so one write per frame keeps
// OpenConnect's one-frame-per-record rule. sendmmsg cannot batch them:
// it marks all but the last message MSG_BATCH, which kTLS's sendmsg
// rejects with EOPNOTSUPP (seen on Linux 6.1), and a single writev would
// merge frames into one record. The kernel still saves the copy into
// userspace crypto and back.
type kernelTX struct {
	rc  syscall.RawConn
	ctl []byte
}

// writeRecords sends each rec as one record.
func (k *kernelTX) writeRecords(recs [][]byte) error {
	i, off := 0, 0
	var werr error
	err := k.rc.Write(func(fd uintptr) bool {
		for i < len(recs) {
			n, err := unix.Write(int(fd), recs[i][off:])
			if err == unix.EAGAIN {
				return false // wait for room; a partly sent record stays open in the kernel
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			off += n
			if off == len(recs[i]) {
				i, off = i+1, 0
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return err
}

// writeStream sends all bufs with writev, leaving record boundaries to
// the kernel (full 16 KiB records): only for peers that parse frames as a
// byte stream (the kvpn cstp-coalesce extension).
func (k *kernelTX) writeStream(bufs [][]byte) error {
	var werr error
	err := k.rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, err := unix.Writev(int(fd), bufs)
			if err == unix.EAGAIN {
				return false
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			for n > 0 && len(bufs) > 0 {
				if n >= len(bufs[0]) {
					n -= len(bufs[0])
					bufs = bufs[1:]
				} else {
					bufs[0] = bufs[0][n:]
					n = 0
				}
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return err
}

// sendControl sends one record of content type typ (an alert, say), with
// the TLS_SET_RECORD_TYPE control message.
func (k *kernelTX) sendControl(typ uint8, data []byte) error {
	if k.ctl == nil {
		k.ctl = make([]byte, unix.CmsgSpace(1))
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&k.ctl[0]))
	h.Level = solTLS
	h.Type = tlsSetRecordType
	h.SetLen(unix.CmsgLen(1))
	k.ctl[unix.CmsgLen(0)] = typ
	var serr error
	err := k.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), data, k.ctl, nil, 0)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	return err
}

// kernelRX receives through the kernel's TLS_RX. With a record other than
// application data queued, read(2) fails with EIO, so every read is a
// recvmsg with room for the TLS_GET_RECORD_TYPE control message.
type kernelRX struct {
	rc  syscall.RawConn
	oob []byte
}

var errCtrunc = errors.New("kernel TLS: control message truncated")

// read returns the bytes of (one or more consecutive records of) one
// content type.
func (k *kernelRX) read(p []byte) (int, uint8, error) {
	if k.oob == nil {
		k.oob = make([]byte, unix.CmsgSpace(1))
	}
	var n, oobn, flags int
	var rerr error
	err := k.rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), p, k.oob, 0)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if errors.Is(err, unix.EBADMSG) {
			return 0, 0, fmt.Errorf("kernel TLS: record failed authentication (bad record MAC): %w", err)
		}
		return 0, 0, err
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return 0, 0, errCtrunc
	}
	if n == 0 && oobn == 0 {
		// End of stream: the kernel reports every record, even an empty
		// one, with its type in a control message, so no message and no
		// bytes is the peer's FIN (or a reset socket, whose error an
		// earlier peek already consumed: tls_rx_rec_wait returns
		// sock_error once, then 0 for RCV_SHUTDOWN).
		return 0, 0, io.EOF
	}
	typ := uint8(typeApplicationData)
	if oobn >= unix.CmsgLen(1) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&k.oob[0]))
		if h.Level == solTLS && h.Type == tlsGetRecordType {
			typ = k.oob[unix.CmsgLen(0)]
		}
	}
	return n, typ, nil
}

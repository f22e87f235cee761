//go:build linux

package ktlsbridge

import (
	"errors"
	"fmt"
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

// kernelTX sends records through the kernel's TLS_TX: every sendmsg
// without MSG_MORE becomes exactly one record, so one message per frame
// keeps OpenConnect's one-frame-per-record rule, and sendmmsg hands the
// kernel a whole batch in one system call.
type kernelTX struct {
	rc   syscall.RawConn
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	ctl  []byte
}

// writeRecords sends each rec as one record.
func (k *kernelTX) writeRecords(recs [][]byte) error {
	if len(k.msgs) < len(recs) {
		k.msgs = make([]unix.Mmsghdr, len(recs))
		k.iovs = make([]unix.Iovec, len(recs))
	}
	for len(recs) > 0 {
		n := len(recs)
		for i, r := range recs {
			k.iovs[i] = unix.Iovec{Base: unsafe.SliceData(r)}
			k.iovs[i].SetLen(len(r))
			k.msgs[i] = unix.Mmsghdr{}
			k.msgs[i].Hdr.Iov = &k.iovs[i]
			k.msgs[i].Hdr.SetIovlen(1)
		}
		var sent int
		var serr error
		err := k.rc.Write(func(fd uintptr) bool {
			r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&k.msgs[0])), uintptr(n), 0, 0, 0)
			if errno == unix.EAGAIN {
				return false
			}
			if errno != 0 {
				serr = errno
			}
			sent = int(r)
			return true
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		// A message the kernel took only in part stays an open record in
		// the kernel, which the rest of it completes (no MSG_MORE: the
		// record closes when its data is all in).
		done := 0
		for done < sent {
			if l := int(k.msgs[done].Len); l < len(recs[done]) {
				recs[done] = recs[done][l:]
				break
			}
			done++
		}
		clear(k.iovs[:n])
		recs = recs[done:]
	}
	return nil
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
	typ := uint8(typeApplicationData)
	if oobn >= unix.CmsgLen(1) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&k.oob[0]))
		if h.Level == solTLS && h.Type == tlsGetRecordType {
			typ = k.oob[unix.CmsgLen(0)]
		}
	}
	return n, typ, nil
}

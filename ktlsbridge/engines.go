package ktlsbridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"kvpn/record"
)

// The record engines behind Conn, one per direction: the kernel's (the
// socket does the crypto) and kvpn's userspace one (crypto/tls's keys,
// records sealed and opened in place).

// kernelTXEngine sends plaintext; the kernel makes the records.
type kernelTXEngine struct {
	k        kernelTX
	recs     [][]byte
	coalesce bool
}

func (e *kernelTXEngine) name() string { return EngineKernel }

func (e *kernelTXEngine) writeRecords(bufs [][]byte, offset int) error {
	e.recs = e.recs[:0]
	for _, b := range bufs {
		e.recs = append(e.recs, b[offset:])
	}
	var err error
	if e.coalesce {
		err = e.k.writeStream(e.recs)
	} else {
		err = e.k.writeRecords(e.recs)
	}
	clear(e.recs)
	return err
}

func (e *kernelTXEngine) control(typ uint8, data []byte) error { return e.k.sendControl(typ, data) }

// kernelRXEngine reads plaintext with the record type from the kernel.
type kernelRXEngine struct{ k kernelRX }

func (e *kernelRXEngine) name() string { return EngineKernel }

func (e *kernelRXEngine) read(p []byte) (int, uint8, error) { return e.k.read(p) }

func (e *kernelRXEngine) buffered() bool { return false }

// userTX seals records in place in the caller's buffers and writes a
// batch with one writev.
type userTX struct {
	conn    net.Conn
	se      *Sealer
	out     net.Buffers
	backing [][]byte
}

func newUserTX(conn net.Conn, k Keys) (*userTX, error) {
	se, err := NewSealer(k)
	if err != nil {
		return nil, err
	}
	return &userTX{conn: conn, se: se}, nil
}

func (u *userTX) name() string { return EngineUserspace }

func (u *userTX) writeRecords(bufs [][]byte, offset int) error {
	u.backing = u.backing[:0]
	for _, b := range bufs {
		rec, err := u.se.Seal(b[:cap(b)], offset, len(b)-offset, typeApplicationData)
		if err != nil {
			return err
		}
		u.backing = append(u.backing, rec)
	}
	u.out = u.backing
	_, err := u.out.WriteTo(u.conn)
	clear(u.backing)
	return err
}

func (u *userTX) control(typ uint8, data []byte) error {
	h, t := u.se.Headroom(), u.se.Tailroom()
	buf := make([]byte, h+len(data)+t)
	copy(buf[h:], data)
	rec, err := u.se.Seal(buf, h, len(data), record.ContentType(typ))
	if err != nil {
		return err
	}
	_, err = u.conn.Write(rec)
	return err
}

// userRX reads raw records from the socket and opens them in place.
type userRX struct {
	conn    net.Conn
	op      *Opener
	bufp    *[]byte // from rxBufs while it holds bytes; buf is *bufp
	buf     []byte
	r, w    int
	pend    []byte
	pendTyp uint8
	err     error // from a record opened ahead by more; returned next
}

// userRXBuffer holds two maximal records, so a read can always complete
// the record at the front.
const userRXBuffer = 2 * (RecordHeaderLen + MaxPlaintext + 256)

func newUserRX(conn net.Conn, k Keys) (*userRX, error) {
	op, err := NewOpener(k)
	if err != nil {
		return nil, err
	}
	return &userRX{conn: conn, op: op}, nil
}

// rxBufs holds the userspace receive buffers. A connection takes one when
// it reads the socket and gives it back once everything in it has been
// returned: an idle connection holds none.
var rxBufs = sync.Pool{New: func() any {
	b := make([]byte, userRXBuffer)
	return &b
}}

func (u *userRX) buffered() bool { return u.w > u.r || len(u.pend) > 0 || u.err != nil }

// release gives the buffer back when nothing in it is still to be returned
// (pend aliases it).
func (u *userRX) release() {
	if u.bufp != nil && u.r == u.w && len(u.pend) == 0 {
		rxBufs.Put(u.bufp)
		u.bufp, u.buf, u.r, u.w = nil, nil, 0, 0
	}
}

func (u *userRX) name() string { return EngineUserspace }

// more appends to p[:n] the application data of the records that are
// already complete in the buffer, without reading the socket: a reader of
// frames (bufio) then gets a whole burst per Read, so the tunnel pumps
// batches instead of single packets (one record carries one CSTP frame).
// It stops at a record of another type, which waits in pend for the next
// read, and at a record p cannot take whole, which is left in the buffer.
func (u *userRX) more(p []byte, n int) (int, error) {
	for n < len(p) {
		l, err := RecordLen(u.buf[u.r:u.w])
		if err != nil || l == 0 || u.w-u.r < l || l-RecordHeaderLen > len(p)-n+256 {
			return n, nil // malformed (the next read says so), incomplete, or too big
		}
		rec := u.buf[u.r : u.r+l]
		ct, pt, err := u.op.Open(rec)
		typ := uint8(ct)
		if err != nil {
			// Keep what was read; the error comes with the next read.
			u.r += l
			u.err = err
			return n, nil
		}
		u.r += l
		if typ != typeApplicationData {
			u.pend, u.pendTyp = pt, typ
			return n, nil
		}
		k := copy(p[n:], pt)
		n += k
		if k < len(pt) {
			u.pend, u.pendTyp = pt[k:], typ
			return n, nil
		}
	}
	return n, nil
}

func (u *userRX) read(p []byte) (int, uint8, error) {
	n, typ, err := u.readRecords(p)
	u.release()
	return n, typ, err
}

func (u *userRX) readRecords(p []byte) (int, uint8, error) {
	if u.err != nil {
		err := u.err
		u.err = nil
		return 0, 0, err
	}
	if len(u.pend) > 0 {
		n := copy(p, u.pend)
		u.pend = u.pend[n:]
		return n, u.pendTyp, nil
	}
	for {
		l, err := RecordLen(u.buf[u.r:u.w])
		if err != nil {
			return 0, 0, fmt.Errorf("ktls: malformed record from peer: %w", err)
		}
		if l > 0 && u.w-u.r >= l {
			rec := u.buf[u.r : u.r+l]
			u.r += l
			ct, pt, err := u.op.Open(rec)
			if err != nil {
				return 0, 0, err
			}
			typ := uint8(ct)
			n := copy(p, pt)
			u.pend, u.pendTyp = pt[n:], typ
			if typ == typeApplicationData && len(u.pend) == 0 {
				n, err = u.more(p, n)
			}
			return n, typ, err
		}
		if u.r > 0 && (u.w == len(u.buf) || u.r == u.w) {
			u.w = copy(u.buf, u.buf[u.r:u.w])
			u.r = 0
		}
		if u.bufp == nil {
			u.bufp = rxBufs.Get().(*[]byte)
			u.buf = *u.bufp
		}
		n, err := u.conn.Read(u.buf[u.w:])
		u.w += n
		if err != nil {
			if errors.Is(err, io.EOF) && u.w > u.r {
				return 0, 0, io.ErrUnexpectedEOF
			}
			if n == 0 {
				return 0, 0, err
			}
		}
	}
}

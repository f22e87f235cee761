package ktlsbridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"kvpn/record"
)

// Conn is a TLS connection after the handshake whose records are handled
// by the kernel or by kvpn's userspace engine, chosen per direction. It
// implements record.Conn.
type Conn struct {
	raw    net.Conn
	cs     tls.ConnectionState
	tx     txEngine
	rx     rxEngine
	engine record.Engine
	// KernelErrors says why the kernel did not take TX ([0]) or RX ([1]);
	// nil where it did.
	KernelErrors [2]error

	rc syscall.RawConn // raw's, for WaitRead; nil if it has none

	wmu  sync.Mutex
	wvec [1][]byte // Write's one-record vector (escapes through txEngine)

	rmu     sync.Mutex
	ctlBuf  []byte
	rpend   []byte // application data read into ctlBuf, not yet returned
	closeMu sync.Once
}

var _ record.Conn = (*Conn)(nil)

// txEngine encrypts and sends records.
type txEngine interface {
	name() string
	// writeRecords sends bufs[i][offset:] as one record each; the engine
	// may use the headroom before offset and the capacity after.
	writeRecords(bufs [][]byte, offset int) error
	// control sends one record of another content type (alerts).
	control(typ uint8, data []byte) error
}

// rxEngine receives and decrypts records.
type rxEngine interface {
	name() string
	// read returns plaintext of one content type.
	read(p []byte) (int, uint8, error)
	// buffered reports whether read has something to return without
	// reading the socket.
	buffered() bool
}

// WaitRead blocks until a Read would not wait for the network, without
// holding a receive buffer meanwhile: what the engine has buffered counts,
// else the socket is polled for readability (peekReadable). A session's
// reader calls it before it takes pooled buffers, so idle sessions hold
// none. It returns the socket's error (closed, deadline).
func (c *Conn) WaitRead() error {
	c.rmu.Lock()
	ready := len(c.rpend) > 0 || c.rx.buffered()
	c.rmu.Unlock()
	if ready || c.rc == nil {
		return nil
	}
	return c.rc.Read(peekReadable)
}

// Read returns application data. Alerts end the stream: close_notify as
// io.EOF, anything else as an error naming the alert. Post-handshake
// handshake messages are handled: NewSessionTicket is ignored (kvpn never
// resumes), KeyUpdate ends the connection with ErrKeyUpdate (the client
// reconnects with its cookie).
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.rpend) > 0 {
		n := copy(p, c.rpend)
		c.rpend = c.rpend[n:]
		return n, nil
	}
	for {
		buf := p
		if len(p) < minControlRead {
			// A control record must be read whole.
			if c.ctlBuf == nil {
				c.ctlBuf = make([]byte, maxControlRecord)
			}
			buf = c.ctlBuf
		}
		n, typ, err := c.rx.read(buf)
		if err != nil {
			c.sendAlert(err)
			return 0, corrupt(err)
		}
		switch typ {
		case typeApplicationData:
			if n == 0 {
				continue // an empty record (RFC 8446 section 5.1 allows them): not an end of stream
			}
			if len(p) < minControlRead {
				// Read into the control buffer: keep what p cannot take.
				k := copy(p, buf[:n])
				c.rpend = buf[k:n]
				return k, nil
			}
			return n, nil
		case typeAlert:
			return 0, corrupt(alertError(buf[:n]))
		case typeHandshake:
			if n > 0 && buf[0] == msgKeyUpdate {
				return 0, ErrKeyUpdate
			}
			// NewSessionTicket (or anything else): ignore.
		default:
			return 0, fmt.Errorf("%w: ktls: unexpected record type %d after the handshake", record.ErrCorrupt, typ)
		}
	}
}

// lingerClose closes raw after a TLS alert: it half-closes (where it
// can) and discards what the peer still sends for up to lingerTime or
// lingerBytes, so that the peer reads the alert instead of a reset.
func lingerClose(raw net.Conn) {
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	raw.SetReadDeadline(time.Now().Add(lingerTime))
	go func() {
		io.Copy(io.Discard, io.LimitReader(raw, lingerBytes))
		raw.Close()
	}()
}

const (
	lingerTime  = time.Second
	lingerBytes = 64 << 10
)

// sendAlert tells the peer why its record was refused, with the fatal
// alert the error calls for (bad_record_mac, record_overflow, decode_error,
// unexpected_message; RFC 8446 section 5.2, RFC 5246 section 6.2.3), as
// crypto/tls does. Only errors of the userspace engine carry an alert; the
// kernel's RX reports EBADMSG without one. Best effort and bounded: a
// writer holding the write lock (a batch blocked on a stalled peer) is not
// waited for, and the send gives up after a second. The connection is dead
// either way; the caller closes it.
func (c *Conn) sendAlert(err error) {
	var re *recordError
	if !errors.As(err, &re) || !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	c.raw.SetWriteDeadline(time.Now().Add(time.Second))
	c.tx.control(typeAlert, []byte{alertLevelFatal, recordAlert(err)})
}

const alertLevelFatal = 2

// corrupt marks errors caused by what the peer sent (see record.ErrCorrupt);
// end of stream, closed sockets and timeouts pass through.
func corrupt(err error) error {
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout(), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.ETIMEDOUT):
		return err
	}
	return fmt.Errorf("%w: %w", record.ErrCorrupt, err)
}

const (
	minControlRead   = 512
	maxControlRecord = 16384 + 256
	msgKeyUpdate     = 24 // RFC 8446 section 4.6.3
)

// ErrKeyUpdate is returned when the peer asks for a TLS 1.3 key update:
// the kernels kvpn targets cannot rekey a kTLS socket, and kvpn treats the
// request the same way in userspace: the connection ends and the client
// reconnects with its session cookie.
var ErrKeyUpdate = errors.New("ktls: peer sent a TLS 1.3 KeyUpdate; reconnect needed")

// AlertError is a TLS alert from the peer other than close_notify.
type AlertError struct{ Level, Description uint8 }

func (e *AlertError) Error() string {
	return fmt.Sprintf("ktls: peer sent TLS alert %d (level %d)", e.Description, e.Level)
}

func alertError(b []byte) error {
	if len(b) < 2 {
		return errors.New("ktls: truncated alert record")
	}
	if b[1] == 0 { // close_notify
		return io.EOF
	}
	return &AlertError{Level: b[0], Description: b[1]}
}

// Write sends p as one record (split at the 16 KiB record limit).
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// The copy with headroom goes into a pooled buffer, held for this
	// call only: kept per connection, it stayed as big as the largest
	// write (16 KiB) for the connection's life.
	sp := scratchBufs.Get().(*[]byte)
	defer scratchBufs.Put(sp)
	vec := &c.wvec
	total := 0
	for len(p) > 0 {
		n := min(len(p), MaxPlaintext)
		buf := (*sp)[:record.Headroom+n]
		copy(buf[record.Headroom:], p[:n])
		vec[0] = buf
		err := c.tx.writeRecords(vec[:], record.Headroom)
		vec[0] = nil // the buffer goes back to the pool
		if err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	return total, nil
}

// scratchBufs holds Write's copies: one record with room for its header
// and tag.
var scratchBufs = sync.Pool{New: func() any {
	b := make([]byte, record.Headroom+MaxPlaintext+record.Tailroom)
	return &b
}}

// WriteRecords implements record.Conn.
func (c *Conn) WriteRecords(bufs [][]byte, offset int) error {
	for _, b := range bufs {
		if len(b)-offset > MaxPlaintext {
			return fmt.Errorf("ktls: record of %d bytes exceeds %d", len(b)-offset, MaxPlaintext)
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.tx.writeRecords(bufs, offset)
}

// SetCoalesce lets the kernel engine pack many frames into each record
// (one writev per batch) instead of one record per frame. Only for a peer
// that reads frames as a byte stream: vpnd and vpnc negotiate it with the
// cstp-coalesce extension; stock OpenConnect peers need one frame per
// record. The userspace engine keeps one record per frame either way.
func (c *Conn) SetCoalesce(on bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if k, ok := c.tx.(*kernelTXEngine); ok {
		k.coalesce = on
	}
}

// Close sends close_notify and closes the socket.
func (c *Conn) Close() error {
	var err error
	c.closeMu.Do(func() {
		c.raw.SetWriteDeadline(time.Now().Add(2 * time.Second))
		c.wmu.Lock()
		c.tx.control(typeAlert, []byte{1, 0}) // warning, close_notify
		c.wmu.Unlock()
		err = c.raw.Close()
	})
	return err
}

func (c *Conn) SetDeadline(t time.Time) error        { return c.raw.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error    { return c.raw.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error   { return c.raw.SetWriteDeadline(t) }
func (c *Conn) RemoteAddr() net.Addr                 { return c.raw.RemoteAddr() }
func (c *Conn) LocalAddr() net.Addr                  { return c.raw.LocalAddr() }
func (c *Conn) ConnectionState() tls.ConnectionState { return c.cs }
func (c *Conn) Engine() record.Engine                { return c.engine }

// the kernel holds it

package ktlsbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kvpn/record"
)

// Mode says whether the kernel should run the record layer.
type Mode string

const (
	// ModeAuto uses kernel TLS in each direction where the kernel accepts
	// the cipher, and the userspace record layer elsewhere.
	ModeAuto Mode = "auto"
	// ModeOn requires kernel TLS in both directions; a connection the
	// kernel cannot take fails with a clear error.
	ModeOn Mode = "on"
	// ModeOff never uses kernel TLS (kernel crypto is outside Go's FIPS
	// boundary, for one).
	ModeOff Mode = "off"
)

// DisableEnv, set to 1, turns kernel TLS off whatever the configuration
// says: a kill switch in the manner of quic-go's.
const DisableEnv = "KVPN_DISABLE_KTLS"

// ParseMode parses auto, on or off.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeOn, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("ktls: unknown mode %q (want auto, on or off)", s)
}

// Engine names, as reported in record.Engine.
const (
	EngineKernel    = "kernel"
	EngineUserspace = record.EngineUserspace
)

// Server runs a TLS server handshake on raw with crypto/tls, then hands
// the record layer to the kernel or to the userspace engine (see Mode).
func Server(ctx context.Context, raw net.Conn, cfg *tls.Config, mode Mode) (*Conn, error) {
	return handshake(ctx, raw, cfg, true, mode)
}

// Client runs a TLS client handshake; see Server.
func Client(ctx context.Context, raw net.Conn, cfg *tls.Config, mode Mode) (*Conn, error) {
	return handshake(ctx, raw, cfg, false, mode)
}

func handshake(ctx context.Context, raw net.Conn, cfg *tls.Config, server bool, mode Mode) (*Conn, error) {
	off := errOff
	if os.Getenv(DisableEnv) == "1" {
		mode, off = ModeOff, errDisabled
	}
	capt := NewCapture(raw, server)
	var tc *tls.Conn
	if server {
		tc = tls.Server(capt.Conn(), capt.Config(cfg))
	} else {
		tc = tls.Client(capt.Conn(), capt.Config(cfg))
	}
	fail := func(err error) (*Conn, error) {
		raw.Close()
		return nil, err
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		if server && cfg != nil && cfg.ClientAuth != tls.NoClientCert {
			// A refused client certificate: under TLS 1.3 the client has
			// finished its handshake and may have sent its first request,
			// and closing now, with that request unread, would reset the
			// connection and lose the alert that says why.
			lingerClose(raw)
			return nil, err
		}
		return fail(err)
	}
	cs := tc.ConnectionState()
	secrets, err := capt.Finish(cs)
	if err != nil {
		return fail(err)
	}
	ck, sk, err := DeriveKeys(secrets)
	if err != nil {
		return fail(err)
	}
	txKeys, rxKeys := ck, sk
	if server {
		txKeys, rxKeys = sk, ck
	}
	if hook := testHookKeys.Load(); hook != nil {
		(*hook)(&txKeys, &rxKeys)
	}
	c := &Conn{raw: raw, cs: cs}
	if sc, ok := raw.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	// From here on crypto/tls is never used again: its Write would
	// encrypt a second time, and its sequence numbers are now ours.
	var kerr [2]error // TX, RX
	if mode == ModeOff {
		kerr = [2]error{off, off}
	} else {
		kerr = c.tryKernel(txKeys, rxKeys)
	}
	if mode == ModeOn && (kerr[0] != nil || kerr[1] != nil) {
		return fail(fmt.Errorf("%w (%s, %s): tx: %v; rx: %v", ErrKernelRequired,
			tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), kerr[0], kerr[1]))
	}
	if kerr[0] != nil {
		if c.tx, err = newUserTX(raw, txKeys); err != nil {
			return fail(err)
		}
	}
	if kerr[1] != nil {
		if c.rx, err = newUserRX(raw, rxKeys); err != nil {
			return fail(err)
		}
	}
	c.engine = record.Engine{TX: c.tx.name(), RX: c.rx.name()}
	c.KernelErrors = kerr
	return c, nil
}

// The reasons a connection stays in userspace without trying the kernel,
// named in Describe so a log says why even when the kernel has kTLS.
var (
	errOff      = errors.New("ktls=off")
	errDisabled = errors.New(DisableEnv + "=1")
)

// forcedOff reports whether err is one of the reasons above.
func forcedOff(err error) bool { return errors.Is(err, errOff) || errors.Is(err, errDisabled) }

// testHookKeys lets tests corrupt the derived keys (negative controls).
var testHookKeys atomic.Pointer[func(tx, rx *Keys)]

// ErrKernelRequired is returned in ModeOn when the kernel cannot take the
// connection in both directions.
var ErrKernelRequired = errors.New("ktls=on but the kernel cannot take this connection")

// Describe says which engine runs each direction and, for a direction left
// in userspace, why: the line logged once per session.
func (c *Conn) Describe() string {
	s := fmt.Sprintf("%s %s: tx=%s rx=%s", tls.VersionName(c.cs.Version), tls.CipherSuiteName(c.cs.CipherSuite), c.engine.TX, c.engine.RX)
	switch tx, rx := c.KernelErrors[0], c.KernelErrors[1]; {
	case forcedOff(tx):
		s += fmt.Sprintf(" (kernel TLS off: %v)", tx)
	case tx != nil:
		s += fmt.Sprintf(" (kernel TLS unavailable: %v)", tx)
	case rx != nil:
		s += fmt.Sprintf(" (kernel TLS RX unavailable: %v)", rx)
	}
	return s
}

// tryKernel attaches the TLS ULP and sets TLS_TX and TLS_RX, each on its
// own so one direction can stay in userspace.
func (c *Conn) tryKernel(tx, rx Keys) [2]error {
	tcp, ok := c.raw.(*net.TCPConn)
	if !ok {
		err := errors.New("not a TCP connection")
		return [2]error{err, err}
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return [2]error{err, err}
	}
	var res [2]error
	cerr := rc.Control(func(fd uintptr) {
		if err := enableULP(int(fd)); err != nil {
			res = [2]error{err, err}
			return
		}
		if err := setCrypto(int(fd), tlsTX, tx.KernelInfo()); err != nil {
			res[0] = err
		} else {
			c.tx = &kernelTXEngine{k: kernelTX{rc: rc}}
		}
		if err := setCrypto(int(fd), tlsRX, rx.KernelInfo()); err != nil {
			res[1] = err
		} else {
			c.rx = &kernelRXEngine{k: kernelRX{rc: rc}}
		}
	})
	if cerr != nil {
		return [2]error{cerr, cerr}
	}
	return res
}

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

func (e *kernelRXEngine) name() string                      { return EngineKernel }
func (e *kernelRXEngine) read(p []byte) (int, uint8, error) { return e.k.read(p) }
func (e *kernelRXEngine) buffered() bool                    { return false } // the kernel holds it

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
	rec, err := u.se.Seal(buf, h, len(data), typ)
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
		typ, pt, err := u.op.Open(rec)
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
			typ, pt, err := u.op.Open(rec)
			if err != nil {
				return 0, 0, err
			}
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

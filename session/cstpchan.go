package session

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/cstp"
	"kvpn/record"
)

// CSTPChannel carries packets as CSTP frames over a TLS record connection,
// one frame per record (see record.Conn for why).
type CSTPChannel struct {
	conn record.Conn
	fr   *cstp.Reader
	mtu  int

	lastRecv atomic.Int64 // unix nanoseconds
	lastSend atomic.Int64

	cmu  sync.Mutex // guards ctrl, the scratch buffer for control frames
	ctrl []byte

	rerr error // sticky read error: a broken stream stays broken

	// gso receives GSO-DATA frames (cstp-gso extension) when the peer
	// negotiated it; pending holds one that arrived behind packets still
	// to be delivered, so it goes out after them, in order.
	gso     func(frame []byte) error
	pending []byte
	hasPend bool
	// peerGSO: the peer accepts GSO-DATA frames from us.
	peerGSO atomic.Bool
	gsoRecs [][]byte // WriteGSOBatch's reused vector of small frames

	// writeTimeout bounds each write (SetWriteTimeout); writeBy is the
	// write deadline last set on conn, in unix nanoseconds.
	writeTimeout time.Duration
	writeBy      atomic.Int64
	closing      atomic.Bool // Disconnect or Terminate set their own deadline

	Stats Stats
}

// ErrWriteStalled is returned (wrapped) by a write that could not finish
// within the channel's write timeout: the peer stopped reading, and TCP
// flow control stopped the sender. Without a bound such a peer would hold
// its session, and its tunnel address, for ever.
var ErrWriteStalled = errors.New("peer stopped reading: tunnel write deadline exceeded")

// SetWriteTimeout makes every later write on the channel (packets and
// control frames) fail with ErrWriteStalled once it has been blocked for
// about d (between 3/4 d and d: the deadline is moved forward only every
// d/4, so the hot path does not pay for a deadline per packet). Zero
// means no bound. Call before the channel carries traffic.
func (c *CSTPChannel) SetWriteTimeout(d time.Duration) { c.writeTimeout = d }

// armWrite moves the write deadline to now + writeTimeout when a quarter
// of it has passed since it was last moved.
func (c *CSTPChannel) armWrite() {
	d := c.writeTimeout
	if d <= 0 || c.closing.Load() {
		return
	}
	now := time.Now()
	by := c.writeBy.Load()
	if by-now.UnixNano() > int64(d-d/4) {
		return
	}
	next := now.Add(d)
	if c.writeBy.CompareAndSwap(by, next.UnixNano()) {
		c.conn.SetWriteDeadline(next)
	}
}

// writeErr marks a write's timeout as ErrWriteStalled: the tunnel sets no
// other write deadline, so a timeout means the peer stopped reading.
func (c *CSTPChannel) writeErr(err error) error {
	if c.writeTimeout <= 0 {
		return err
	}
	var ne interface{ Timeout() bool }
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w (%s): %w", ErrWriteStalled, c.writeTimeout, err)
	}
	return err
}

// Stats counts a channel's traffic. Fields are updated atomically.
type Stats struct {
	RxPackets, RxBytes atomic.Uint64
	TxPackets, TxBytes atomic.Uint64
}

// NewCSTPChannel wraps conn, whose pending input is already buffered in br
// (the login and CONNECT exchange ran through the same bufio.Reader, and
// bytes after the CONNECT answer belong to the first frames). br must be at
// least cstp.HeaderLen+cstp.MaxPayload bytes. mtu bounds DATA payloads.
func NewCSTPChannel(conn record.Conn, br *bufio.Reader, mtu int) (*CSTPChannel, error) {
	fr, err := cstp.NewReader(br, cstp.MaxPayload)
	if err != nil {
		return nil, err
	}
	c := &CSTPChannel{conn: conn, fr: fr, mtu: mtu}
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastSend.Store(now)
	return c, nil
}

// NewFrameReader returns a bufio.Reader big enough for any CSTP frame, to be
// used for the HTTP exchange before the tunnel and then for the frames.
func NewFrameReader(conn record.Conn) *bufio.Reader {
	return bufio.NewReaderSize(conn, cstp.HeaderLen+cstp.MaxPayload)
}

func (c *CSTPChannel) Name() string { return "tls/" + c.conn.Engine().String() }

// Conn returns the record connection under the channel.
func (c *CSTPChannel) Conn() record.Conn { return c.conn }

func (c *CSTPChannel) LastReceive() time.Time { return time.Unix(0, c.lastRecv.Load()) }
func (c *CSTPChannel) LastSend() time.Time    { return time.Unix(0, c.lastSend.Load()) }

// ReadPackets implements Channel. It returns once the batch is full or no
// further complete frame is buffered, so that packets reach the TUN device
// without waiting for the next TLS record to arrive.
func (c *CSTPChannel) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if c.rerr != nil {
		return 0, c.rerr
	}
	n, err := c.readPackets(bufs, sizes, offset)
	if err != nil {
		c.rerr = err
		if n > 0 {
			// Deliver what we have; the error comes back on the next call.
			return n, nil
		}
	}
	return n, err
}

// AcceptGSO lets the peer send GSO-DATA frames (a virtio-net header and
// a possibly segmented-later super-packet); each is handed to deliver in
// order with the DATA frames around it. deliver's error ends the channel.
// Call before the first ReadPackets.
func (c *CSTPChannel) AcceptGSO(deliver func(frame []byte) error) {
	c.gso = deliver
	c.pending = make([]byte, 0, cstp.MaxPayload)
}

// deliverGSO hands a GSO-DATA frame to the AcceptGSO callback.
func (c *CSTPChannel) deliverGSO(frame []byte) error {
	c.Stats.RxPackets.Add(1)
	c.Stats.RxBytes.Add(uint64(len(frame)))
	return c.gso(frame)
}

func (c *CSTPChannel) readPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	if c.hasPend {
		c.hasPend = false
		if err := c.deliverGSO(c.pending); err != nil {
			return 0, err
		}
	}
	for n < len(bufs) {
		if n > 0 && c.fr.Buffered() == 0 {
			break
		}
		t, payload, err := c.fr.Next()
		if err != nil {
			return n, protocolError(err)
		}
		c.lastRecv.Store(time.Now().UnixNano())
		switch t {
		case cstp.TypeData:
			if len(payload) > c.mtu {
				return n, &ProtocolError{fmt.Errorf("cstp: DATA frame of %d bytes exceeds the tunnel MTU %d", len(payload), c.mtu)}
			}
			if len(bufs[n]) < offset+len(payload) {
				return n, fmt.Errorf("cstp: buffer too small for %d-byte packet", len(payload))
			}
			sizes[n] = copy(bufs[n][offset:], payload)
			c.Stats.RxPackets.Add(1)
			c.Stats.RxBytes.Add(uint64(len(payload)))
			n++
		case cstp.TypeGSOData:
			if c.gso == nil {
				return n, &ProtocolError{errors.New("cstp: GSO-DATA frame but cstp-gso was not negotiated")}
			}
			if n > 0 {
				// Packets read before it go to the TUN first.
				c.pending = append(c.pending[:0], payload...)
				c.hasPend = true
				return n, nil
			}
			if err := c.deliverGSO(payload); err != nil {
				return n, err
			}
		case cstp.TypeDPDReq:
			// Echo the payload, as openconnect and ocserv do.
			if err := c.sendControl(cstp.TypeDPDResp, payload); err != nil {
				return n, err
			}
		case cstp.TypeDPDResp, cstp.TypeKeepalive:
			// Liveness only; lastRecv is already updated.
		case cstp.TypeDisconnect:
			return n, &PeerClosedError{Reason: cstp.DisconnectReason(payload)}
		case cstp.TypeTerminate:
			return n, &PeerClosedError{Terminate: true, Reason: cstp.DisconnectReason(payload)}
		case cstp.TypeCompressed:
			// Compression is never negotiated by kvpn (we do not answer
			// X-CSTP-Accept-Encoding), so a compressed frame is a protocol error.
			return n, &ProtocolError{errors.New("cstp: COMPRESSED frame but no compression was negotiated")}
		default:
			return n, &ProtocolError{fmt.Errorf("cstp: unknown frame type 0x%02x", uint8(t))}
		}
	}
	return n, nil
}

// WritePackets implements Channel: each packet gets its CSTP header written
// into its headroom and becomes one TLS record; the batch goes out in one
// WriteRecords call.
func (c *CSTPChannel) WritePackets(bufs [][]byte, offset int) error {
	if offset < cstp.HeaderLen+record.Headroom {
		return fmt.Errorf("cstp: headroom %d < %d", offset, cstp.HeaderLen+record.Headroom)
	}
	var bytes uint64
	for _, b := range bufs {
		pkt := b[offset:]
		cstp.PutHeader(b[offset-cstp.HeaderLen:], cstp.TypeData, len(pkt))
		bytes += uint64(len(pkt))
	}
	// Each frame, header included, is one record: the record layer gets
	// the headroom in front of the CSTP header.
	c.armWrite()
	err := c.conn.WriteRecords(bufs, offset-cstp.HeaderLen)
	if err != nil {
		return c.writeErr(err)
	}
	c.lastSend.Store(time.Now().UnixNano())
	c.Stats.TxPackets.Add(uint64(len(bufs)))
	c.Stats.TxBytes.Add(bytes)
	return nil
}

// SetPeerGSO records that the peer confirmed cstp-gso: it takes WriteGSO.
func (c *CSTPChannel) SetPeerGSO() { c.peerGSO.Store(true) }

// PeerGSO reports whether the peer takes WriteGSO.
func (c *CSTPChannel) PeerGSO() bool { return c.peerGSO.Load() }

// WriteGSOBatch sends the GSO frames bufs[i][offset:] (virtio-net header
// and packet, as tun.VirtioDevice.ReadGSOBatch returns them) as GSO-DATA
// frames, only to a peer that negotiated cstp-gso. The CSTP header goes
// into the headroom. Frames that fit one TLS record leave together in one
// WriteRecords call (a burst of TCP ACKs is one system call); a larger
// frame is cut into records by the record layer's Write. Buffers need
// cstp.HeaderLen+record.Headroom in front of offset and record.Tailroom
// spare capacity, as for WritePackets.
func (c *CSTPChannel) WriteGSOBatch(bufs [][]byte, offset int) error {
	if offset < cstp.HeaderLen+record.Headroom {
		return fmt.Errorf("cstp: headroom %d < %d", offset, cstp.HeaderLen+record.Headroom)
	}
	small := c.gsoRecs[:0]
	bytes := 0
	var err error
	c.armWrite()
	for _, b := range bufs {
		frame := b[offset:]
		if len(frame) > cstp.MaxPayload {
			err = fmt.Errorf("cstp: GSO frame of %d bytes exceeds %d", len(frame), cstp.MaxPayload)
			break
		}
		cstp.PutHeader(b[offset-cstp.HeaderLen:], cstp.TypeGSOData, len(frame))
		bytes += len(frame)
		if cstp.HeaderLen+len(frame) <= record.MaxRecordPayload {
			small = append(small, b)
			continue
		}
		if len(small) > 0 {
			if err = c.conn.WriteRecords(small, offset-cstp.HeaderLen); err != nil {
				break
			}
			small = small[:0]
		}
		if _, err = c.conn.Write(b[offset-cstp.HeaderLen:]); err != nil {
			break
		}
	}
	if err == nil && len(small) > 0 {
		err = c.conn.WriteRecords(small, offset-cstp.HeaderLen)
	}
	clear(small)
	c.gsoRecs = small[:0]
	if err != nil {
		return c.writeErr(err)
	}
	c.lastSend.Store(time.Now().UnixNano())
	c.Stats.TxPackets.Add(uint64(len(bufs)))
	c.Stats.TxBytes.Add(uint64(bytes))
	return nil
}

// sendControl writes a control frame under the write timeout.
func (c *CSTPChannel) sendControl(t cstp.FrameType, payload []byte) error {
	c.armWrite()
	return c.writeControl(t, payload)
}

// writeControl writes a control frame under whatever deadline is set
// (Disconnect and Terminate set their own short one).
func (c *CSTPChannel) writeControl(t cstp.FrameType, payload []byte) error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.ctrl = cstp.AppendFrame(c.ctrl[:0], t, payload)
	if _, err := c.conn.Write(c.ctrl); err != nil {
		return c.writeErr(err)
	}
	c.lastSend.Store(time.Now().UnixNano())
	return nil
}

func (c *CSTPChannel) Ping() error      { return c.sendControl(cstp.TypeDPDReq, nil) }
func (c *CSTPChannel) Keepalive() error { return c.sendControl(cstp.TypeKeepalive, nil) }

// Disconnect sends DISCONNECT with openconnect's reason encoding and closes.
func (c *CSTPChannel) Disconnect(reason string) error {
	c.closing.Store(true)
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	err := c.writeControl(cstp.TypeDisconnect, cstp.DisconnectPayload(reason))
	c.conn.Close()
	return err
}

// Terminate sends TERMINATE (the server kicks the client) and closes.
func (c *CSTPChannel) Terminate(reason string) error {
	c.closing.Store(true)
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	err := c.writeControl(cstp.TypeTerminate, cstp.DisconnectPayload(reason))
	c.conn.Close()
	return err
}

func (c *CSTPChannel) Close() error { return c.conn.Close() }

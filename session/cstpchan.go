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
	fr   *frameReader
	mtu  int

	lastRecv atomic.Int64 // unix nanoseconds
	lastSend atomic.Int64

	cmu  sync.Mutex // guards ctrl, the scratch buffer for control frames
	ctrl []byte

	rerr error // sticky read error: a broken stream stays broken

	// gso receives GSO-DATA frames (cstp-gso extension) when the peer
	// negotiated it; pending holds one that arrived behind packets still
	// to be delivered, so it goes out after them, in order. It aliases
	// fr's buffer, which stays until the next fr.Next.
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
// bytes after the CONNECT answer belong to the first frames): those bytes
// are taken out of br, and br is not read again. mtu bounds DATA payloads.
//
// The channel reads frames into a buffer from a pool shared by all
// channels, held only while it has unread bytes (frameReader).
func NewCSTPChannel(conn record.Conn, br *bufio.Reader, mtu int) (*CSTPChannel, error) {
	if br == nil {
		return nil, errors.New("session: NewCSTPChannel: nil bufio.Reader")
	}
	pre, _ := br.Peek(br.Buffered())
	fr := newFrameReader(conn, cstp.MaxPayload, pre)
	br.Discard(len(pre))
	c := &CSTPChannel{conn: conn, fr: fr, mtu: mtu}
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastSend.Store(now)
	return c, nil
}

// NewFrameReader returns the bufio.Reader for the HTTP exchange before the
// tunnel, whose bytes past the CONNECT answer NewCSTPChannel takes over. It
// holds a whole request head (cstp.PeekHead) and no more: the frames are
// read into pooled buffers, not into this one.
func NewFrameReader(conn record.Conn) *bufio.Reader {
	return bufio.NewReaderSize(conn, httpBufSize)
}

// httpBufSize holds the largest request head cstp.PeekHead accepts, with
// room for what follows it in the same read.
const httpBufSize = cstp.MaxHeadBytes + 4096

func (c *CSTPChannel) Name() string { return "tls/" + c.conn.Engine().String() }

// Conn returns the record connection under the channel.
func (c *CSTPChannel) Conn() record.Conn { return c.conn }

func (c *CSTPChannel) LastReceive() time.Time { return time.Unix(0, c.lastRecv.Load()) }
func (c *CSTPChannel) LastSend() time.Time    { return time.Unix(0, c.lastSend.Load()) }

// ReadPackets implements Channel. It waits for one frame only; after it,
// it returns once the batch is full or no further complete frame is
// buffered, so that packets reach the TUN device without waiting for the
// next TLS record, and a caller holding pooled buffers (UplinkPooled)
// never waits on the network with them. When that frame was a control
// frame (DPD, keepalive) it may return 0 packets and no error.
func (c *CSTPChannel) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if c.rerr != nil {
		c.fr.close()
		return 0, c.rerr
	}
	n, err := c.readPackets(bufs, sizes, offset)
	if err != nil {
		c.rerr = err
		if n == 0 {
			c.fr.close() // nothing aliases it now: the stream is over
		} else {
			// Deliver what we have; the error comes back on the next call.
			return n, nil
		}
	}
	return n, err
}

// readWaiter is a connection that can wait until it is readable without
// holding a receive buffer (ktlsbridge.Conn.WaitRead).
type readWaiter interface{ WaitRead() error }

// WaitRead blocks until ReadPackets has a whole frame (or an error) to
// work on. While the connection is silent it holds no buffer: it waits on
// the connection's readability (readWaiter) before taking one from the
// pool; only a frame that arrives in parts keeps one meanwhile. The uplink
// calls it before it takes its pooled packet buffers, so an idle session
// holds neither. Only the reading goroutine may call it.
func (c *CSTPChannel) WaitRead() error {
	if c.hasPend || c.rerr != nil {
		return nil
	}
	c.fr.discard() // without a pending GSO frame nothing aliases it
	for !c.fr.ready() {
		if c.fr.buffered() == 0 {
			if w, ok := c.conn.(readWaiter); ok {
				if err := w.WaitRead(); err != nil {
					return err
				}
			}
		}
		if err := c.fr.fill(c.fr.buffered() + 1); err != nil {
			c.rerr = protocolError(err)
			if c.fr.buffered() == 0 {
				c.fr.close()
			}
			return nil // ReadPackets returns it
		}
	}
	return nil
}

// AcceptGSO lets the peer send GSO-DATA frames (a virtio-net header and
// a possibly segmented-later super-packet); each is handed to deliver in
// order with the DATA frames around it. deliver's error ends the channel.
// Call before the first ReadPackets.
func (c *CSTPChannel) AcceptGSO(deliver func(frame []byte) error) {
	c.gso = deliver
}

// deliverGSO hands a GSO-DATA frame to the AcceptGSO callback.
func (c *CSTPChannel) deliverGSO(frame []byte) error {
	c.Stats.RxPackets.Add(1)
	c.Stats.RxBytes.Add(uint64(len(frame)))
	return c.gso(frame)
}

func (c *CSTPChannel) readPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, frames := 0, 0
	if c.hasPend {
		c.hasPend = false
		frames++
		err := c.deliverGSO(c.pending)
		c.pending = nil
		if err != nil {
			return 0, err
		}
	}
	for ; n < len(bufs); frames++ {
		// Only the first frame may wait for the network: the caller
		// (UplinkPooled) holds pooled buffers while this runs.
		if frames > 0 && !c.fr.ready() {
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
				// Packets read before it go to the TUN first; it
				// stays in fr's buffer until then.
				c.pending = payload
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
	_, err := c.conn.Write(c.ctrl)
	if cap(c.ctrl) > ctrlKeep {
		// A DPD request's payload is echoed whatever its size (up to
		// 64 KiB): a buffer that size is not kept for the session's life.
		c.ctrl = nil
	}
	if err != nil {
		return c.writeErr(err)
	}
	c.lastSend.Store(time.Now().UnixNano())
	return nil
}

// ctrlKeep is the largest control-frame buffer a channel keeps: DPD
// requests from openconnect and ocserv carry no payload.
const ctrlKeep = 256

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

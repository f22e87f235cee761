package dtls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/logging"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
	"kvpn/session"
	"kvpn/udp"
)

// PSKIdentity is the PSK identity OpenConnect clients send; it identifies
// nothing (the App-ID in the session_id does).
const PSKIdentity = "psk"

// ClientConfig configures a client DTLS channel.
type ClientConfig struct {
	Server  netip.AddrPort // the server's address and X-DTLS-Port
	AppID   []byte         // X-DTLS-App-ID
	PSK     []byte         // exported from the TLS session (see PSK)
	Timeout time.Duration  // handshake timeout
	ChaCha  bool           // offer ChaCha20-Poly1305 first (kvpn extension)
	CID     bool           // use RFC 9146 connection IDs (kvpn extension)
	// Local, if valid, is the source address to bind (port chosen by the
	// kernel); a load generator uses it to pick its source IP.
	Local netip.Addr
	// NoGRO leaves UDP GRO off: its reader keeps a 1 MiB receive area per
	// channel, which a process holding thousands of channels cannot
	// afford (a load generator; one GRO reader per channel is right for
	// vpnc).
	NoGRO bool
}

// ClientChannel is the client's DTLS data channel. It implements
// session.Channel.
type ClientChannel struct {
	conn *udp.Conn
	feed *feedConn
	pion *piondtls.Conn // unused for data after takeover; closed with the channel
	d    *datapath

	rmsgs []udp.Message // reused read vector; only the reading goroutine
	early [][]byte      // data records that arrived during the handshake
	gro   *groReader    // reads coalesced datagrams when UDP GRO is on

	wmu   sync.Mutex
	wmsgs []udp.Message

	closeOnce sync.Once
}

var _ session.Channel = (*ClientChannel)(nil)

// dialCIDLen is the length of the CID Dial asks for: CIDLen; tests play a
// modified client with other lengths.
var dialCIDLen = CIDLen

// maxEarly bounds the data records kept during a handshake.
const maxEarly = 64

// quietPion keeps pion's own logging out of kvpn's logs.
func quietPion() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	f.Writer = io.Discard
	return f
}

// Dial runs the DTLS handshake with the server and takes over its keys.
func Dial(ctx context.Context, cfg ClientConfig) (*ClientChannel, error) {
	if len(cfg.AppID) != AppIDLen {
		return nil, fmt.Errorf("dtls: App-ID of %d bytes, want %d", len(cfg.AppID), AppIDLen)
	}
	var laddr *net.UDPAddr
	if cfg.Local.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.Local, 0))
	}
	uc, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(cfg.Server))
	if err != nil {
		return nil, err
	}
	conn := udp.New(uc)
	feed := newFeedConn(uc.LocalAddr(), uc.RemoteAddr(), func(b []byte) error {
		_, err := uc.Write(b)
		return err
	})
	// Until takeover handshake datagrams go to pion. Data records that
	// arrive early (the server may finish first and send at once) are kept
	// for kvpn's record layer: pion would swallow them.
	readerDone := make(chan struct{})
	var early [][]byte
	go func() {
		defer close(readerDone)
		buf := make([]byte, 65536)
		for {
			n, err := uc.Read(buf)
			if err != nil {
				return
			}
			if n > 0 && (buf[0] == byte(recordlayer.ApplicationData) || buf[0] == byte(recordlayer.ConnectionID)) {
				if len(early) < maxEarly {
					early = append(early, append([]byte(nil), buf[:n]...))
				}
				if buf[0] == byte(recordlayer.ApplicationData) {
					continue
				}
				// A connection-ID record may be the server's Finished:
				// pion gets it too (data it also gets is drained).
			}
			feed.Feed(buf[:n])
		}
	}()
	appID := append([]byte(nil), cfg.AppID...)
	psk := append([]byte(nil), cfg.PSK...)
	opts := []piondtls.ClientOption{}
	if cfg.CID {
		opts = append(opts, piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(dialCIDLen)))
	}
	pc, err := piondtls.ClientWithOptions(feed, uc.RemoteAddr(), append(opts,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		piondtls.WithPSKIdentityHint([]byte(PSKIdentity)),
		piondtls.WithCipherSuites(Suites(cfg.ChaCha)...),
		piondtls.WithLoggerFactory(quietPion()),
		piondtls.WithClientHelloMessageHook(func(ch handshake.MessageClientHello) handshake.Message {
			// PSK-NEGOTIATE: the App-ID rides in the session_id.
			ch.SessionID = appID
			return &ch
		}))...,
	)
	fail := func(err error) (*ClientChannel, error) {
		feed.Close()
		uc.Close()
		<-readerDone
		return nil, err
	}
	if err != nil {
		return fail(err)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	err = pc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		pc.Close() // no application data was sent: closing cannot reuse a nonce
		return fail(fmt.Errorf("dtls handshake with %s: %w", cfg.Server, err))
	}
	feed.handshakeDone() // before the export: see handshakeDone
	keys, err := recordlayer.KeysFromConn(pc)
	if err != nil {
		return fail(err)
	}
	d, err := newDatapath(keys)
	if err != nil {
		return fail(err)
	}
	// Take the socket back from the handshake reader.
	uc.SetReadDeadline(time.Now())
	<-readerDone
	uc.SetReadDeadline(time.Time{})
	feed.takeOver(pc, guardFor(d), func(uint64) { d.Stats.FeedDropped.Add(1) })
	ch := &ClientChannel{conn: conn, feed: feed, pion: pc, d: d, early: early}
	// Only now: the handshake reader above reads single datagrams.
	if !cfg.NoGRO && conn.EnableGRO() {
		ch.gro = newGROReader()
	}
	return ch, nil
}

func (c *ClientChannel) Name() string           { return "dtls/" + c.d.suiteName() }
func (c *ClientChannel) LastReceive() time.Time { return c.d.LastReceive() }
func (c *ClientChannel) LastSend() time.Time    { return c.d.LastSend() }
func (c *ClientChannel) Stats() *Stats          { return &c.d.Stats }
func (c *ClientChannel) LocalAddr() net.Addr    { return c.conn.LocalAddr() }
func (c *ClientChannel) Ping() error            { return c.sendControl(cstp.TypeDPDReq, nil) }
func (c *ClientChannel) Keepalive() error       { return c.sendControl(cstp.TypeKeepalive, nil) }
func (c *ClientChannel) Disconnect(string) error {
	c.sendControl(cstp.TypeDisconnect, nil)
	return c.Close()
}
func (c *ClientChannel) Headroom() int { return c.d.Headroom() }

// Close closes the socket and pion's Conn (whose own close_notify, under
// pion's sequence numbers, the feed drops).
func (c *ClientChannel) Close() error {
	c.closeOnce.Do(func() {
		c.feed.closePion(c.pion)
		c.conn.Close()
	})
	return nil
}

func (c *ClientChannel) sendControl(t cstp.FrameType, payload []byte) error {
	c.d.cmu.Lock()
	defer c.d.cmu.Unlock()
	rec, err := c.d.sealControl(t, payload)
	if err != nil {
		c.sealFailed(err)
		return err
	}
	if _, err := c.conn.Write(rec); err != nil {
		return err
	}
	c.d.lastSend.Store(time.Now().UnixNano())
	return nil
}

// sealFailed closes the channel if its sequence numbers ran out (RFC 6347
// section 4.1: they must not wrap, a repeated record number repeats the
// AEAD nonce); the session goes on over TLS.
func (c *ClientChannel) sealFailed(err error) {
	if errors.Is(err, recordlayer.ErrSeqExhausted) {
		c.Close()
	}
}

// ReadPackets implements session.Channel. Datagrams are received straight
// into bufs so that, decrypted in place, each packet lands at offset.
func (c *ClientChannel) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	// Records from the server carry our connection ID, so the packet
	// sits rhr bytes into the datagram (hr is for the records we send).
	hr := c.d.rhr
	if offset < hr {
		return 0, fmt.Errorf("dtls: headroom %d < %d", offset, hr)
	}
	if len(c.rmsgs) < len(bufs) {
		c.rmsgs = make([]udp.Message, len(bufs))
		for i := range c.rmsgs {
			c.rmsgs[i].Buffers = make([][]byte, 1)
		}
	}
	msgs := c.rmsgs[:len(bufs)]
	var n int
	switch {
	case len(c.early) > 0:
		for n < len(bufs) && len(c.early) > 0 {
			msgs[n].N = copy(bufs[n][offset-hr:], c.early[0])
			c.early = c.early[1:]
			n++
		}
	case c.gro != nil:
		var err error
		if n, err = c.gro.fill(c.conn, msgs, bufs, offset-hr, &c.d.Stats.Coalesced); err != nil {
			return 0, err
		}
	default:
		for i := range msgs {
			msgs[i].Buffers[0] = bufs[i][offset-hr:]
		}
		var err error
		if n, err = c.conn.ReadBatch(msgs); err != nil {
			return 0, err
		}
	}
	out := 0
	for i := range n {
		dg := bufs[i][offset-hr : offset-hr+msgs[i].N]
		if len(dg) == 0 {
			continue
		}
		if dg[0] == byte(recordlayer.Handshake) || dg[0] == byte(recordlayer.ChangeCipherSpec) {
			c.feed.Feed(dg) // a retransmitted flight: pion answers it
			continue
		}
		rec := dg
		if c.d.cidLen > 0 {
			if r, _, err := c.d.nextRecord(dg); err == nil {
				rec = r
			}
		}
		t, payload, err := c.d.open(rec)
		if err != nil {
			if errors.Is(err, errAlert) {
				return out, &session.PeerClosedError{Reason: err.Error()}
			}
			if dg[0] == byte(recordlayer.ConnectionID) && errors.Is(err, recordlayer.ErrReplay) {
				c.feed.Feed(dg) // pion's retransmitted Finished (CID mode)
			}
			continue // counted in Stats.BadRecords
		}
		// The server has our Finished: pion need not answer any more.
		c.feed.peerAuthenticated()
		switch t {
		case cstp.TypeData:
			if len(payload) > 0 && &payload[0] != &bufs[i][offset] {
				continue // not where the caller will read it
			}
			c.d.received(len(payload))
			bufs[out], bufs[i] = bufs[i], bufs[out]
			sizes[out] = len(payload)
			out++
		case cstp.TypeDPDReq:
			c.sendControl(cstp.TypeDPDResp, payload)
		case cstp.TypeDPDResp, cstp.TypeKeepalive:
		case cstp.TypeDisconnect, cstp.TypeTerminate:
			return out, &session.PeerClosedError{Terminate: t == cstp.TypeTerminate}
		}
	}
	return out, nil
}

// WritePackets implements session.Channel: every packet is sealed in place
// and the batch leaves in sendmmsg calls.
func (c *ClientChannel) WritePackets(bufs [][]byte, offset int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.wmsgs) < len(bufs) {
		c.wmsgs = make([]udp.Message, len(bufs))
		for i := range c.wmsgs {
			c.wmsgs[i].Buffers = make([][]byte, 1)
		}
	}
	msgs := c.wmsgs[:len(bufs)]
	bytes := 0
	for i, b := range bufs {
		n := len(b) - offset
		rec, err := c.d.seal(b[:cap(b)], offset, n, cstp.TypeData)
		if err != nil {
			c.sealFailed(err)
			return err
		}
		msgs[i].Buffers[0] = rec
		bytes += n
	}
	err := c.conn.WriteBatch(msgs)
	for i := range msgs {
		msgs[i].Buffers[0] = nil
	}
	if err != nil {
		return err
	}
	c.d.sent(len(bufs), bytes)
	return nil
}

package ktlsbridge

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Capture watches a crypto/tls handshake: it keeps crypto/tls from reading
// past the record it is reading, takes the hello randoms from the handshake
// records that pass through, and collects the secrets from a key log that
// belongs to this connection alone.
//
// Use: c := NewCapture(raw, server); tc := tls.Server(c.Conn(), c.Config(cfg))
// (or tls.Client); tc.Handshake(); s, err := c.Finish(tc.ConnectionState()).
// After that, tc must never be used again (its Write would encrypt a second
// time, and the record sequence numbers now belong to whoever took the
// keys), and the records that follow are read from raw.
type Capture struct {
	server bool
	conn   captureConn

	mu sync.Mutex
	// in tracks the records read from raw (the peer's), out those written
	// to it (ours).
	in, out recordTracker
	// The hello randoms, as seen in the records.
	clientRandom, serverRandom [32]byte
	haveCR, haveSR             bool

	// From the key log.
	logBuf                     []byte // an incomplete line
	logCR                      [32]byte
	haveLogCR                  bool
	master                     []byte
	clientSecret, serverSecret []byte
	logErr                     error
	next                       io.Writer // the key log writer of the base config, if any

	// unbounded is a test hook: let crypto/tls read ahead as it does on a
	// bare connection, to show that Finish notices.
	unbounded bool
}

// NewCapture returns a Capture for a handshake over raw, on the server
// side of it if server is true.
func NewCapture(raw net.Conn, server bool) *Capture {
	c := &Capture{server: server}
	c.conn = captureConn{Conn: raw, c: c}
	if server {
		c.in.hello.want, c.out.hello.want = msgClientHello, msgServerHello
	} else {
		c.in.hello.want, c.out.hello.want = msgServerHello, msgClientHello
	}
	return c
}

// Conn returns the connection to give to tls.Server or tls.Client. Its Read
// never returns bytes past the end of the record being read: first the
// 5-byte header, then at most the rest of that record's body. crypto/tls
// reads with large buffers and would otherwise take whatever the peer sent
// right after its last handshake message (application data, most likely)
// into its own buffer, where neither the kernel nor the userspace record
// layer can get at it.
func (c *Capture) Conn() net.Conn { return &c.conn }

// Config returns a clone of base (nil means an empty config) whose
// KeyLogWriter feeds this capture, and through it base's KeyLogWriter if it
// had one. crypto/tls calls KeyLogWriter under one process-wide lock with
// nothing that tells connections apart, so every connection needs a config
// of its own.
//
// Two more settings keep the record sequence numbers where DeriveKeys
// expects them. On the server side the clone has SessionTicketsDisabled
// set: a TLS 1.3 NewSessionTicket is a record crypto/tls would send after
// the handshake, taking sequence number 0 of the server's direction. On the
// client side ClientSessionCache is cleared: without it crypto/tls offers
// no psk_key_exchange_modes, so a crypto/tls server sends no
// NewSessionTicket either, and no TLS 1.2 session is resumed (crypto/tls
// writes no key log line for a resumed TLS 1.2 session).
func (c *Capture) Config(base *tls.Config) *tls.Config {
	var cfg *tls.Config
	if base == nil {
		cfg = &tls.Config{}
	} else {
		cfg = base.Clone()
	}
	c.mu.Lock()
	c.next = cfg.KeyLogWriter
	c.mu.Unlock()
	cfg.KeyLogWriter = (*captureKeyLog)(c)
	if c.server {
		cfg.SessionTicketsDisabled = true
	} else {
		cfg.ClientSessionCache = nil
	}
	return cfg
}

var (
	errReadAhead      = errors.New("ktlsbridge: crypto/tls read past the end of the handshake")
	errMissingSecrets = errors.New("ktlsbridge: handshake secrets missing from the key log")
	errMissingRandom  = errors.New("ktlsbridge: hello random not seen in the handshake records")
)

// Finish is called after a successful handshake, with the connection state
// crypto/tls reports. It returns the secrets (Version and CipherSuite taken
// from cs) and an error if the handshake is incomplete, if crypto/tls read
// bytes past the handshake (part of a record taken from the socket, or a
// TLS 1.2 record after the peer's Finished), or if secrets are missing (a
// resumed TLS 1.2 session writes no key log line, say).
func (c *Capture) Finish(cs tls.ConnectionState) (*Secrets, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !cs.HandshakeComplete {
		return nil, errors.New("ktlsbridge: handshake not complete")
	}
	if c.in.partial() {
		return nil, fmt.Errorf("%w: %d bytes of a record it has not finished", errReadAhead, c.in.consumed())
	}
	if c.out.partial() {
		return nil, errors.New("ktlsbridge: an outgoing handshake record was written only in part")
	}
	if c.logErr != nil {
		return nil, c.logErr
	}
	s := &Secrets{Version: cs.Version, CipherSuite: cs.CipherSuite}
	switch cs.Version {
	case tls.VersionTLS12:
		// The peer's ChangeCipherSpec is followed by exactly one record,
		// its Finished; a second one can only be data read ahead.
		if c.in.afterCCS > 1 {
			return nil, fmt.Errorf("%w: %d records after the peer's ChangeCipherSpec", errReadAhead, c.in.afterCCS)
		}
		if c.master == nil {
			return nil, fmt.Errorf("%w: no CLIENT_RANDOM line", errMissingSecrets)
		}
		if !c.haveCR || !c.haveSR {
			return nil, errMissingRandom
		}
		if c.logCR != c.clientRandom {
			return nil, errors.New("ktlsbridge: key log line is for another connection")
		}
		s.MasterSecret = bytes.Clone(c.master)
	case tls.VersionTLS13:
		if c.clientSecret == nil || c.serverSecret == nil {
			return nil, fmt.Errorf("%w: no CLIENT_TRAFFIC_SECRET_0 or SERVER_TRAFFIC_SECRET_0 line", errMissingSecrets)
		}
		if c.haveCR && c.logCR != c.clientRandom {
			return nil, errors.New("ktlsbridge: key log line is for another connection")
		}
		s.ClientSecret = bytes.Clone(c.clientSecret)
		s.ServerSecret = bytes.Clone(c.serverSecret)
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, tls.VersionName(cs.Version))
	}
	if c.haveCR {
		s.ClientRandom = c.clientRandom
	} else {
		s.ClientRandom = c.logCR
	}
	s.ServerRandom = c.serverRandom
	return s, nil
}

// captureConn is the net.Conn crypto/tls runs the handshake over.
type captureConn struct {
	net.Conn
	c *Capture
}

func (cc *captureConn) Read(p []byte) (int, error) {
	c := cc.c
	c.mu.Lock()
	if lim := c.in.limit(); len(p) > lim && !c.unbounded {
		p = p[:lim]
	}
	c.mu.Unlock()
	n, err := cc.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.in.feed(p[:n])
		c.takeRandoms()
		c.mu.Unlock()
	}
	return n, err
}

func (cc *captureConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	if n > 0 {
		c := cc.c
		c.mu.Lock()
		c.out.feed(p[:n])
		c.takeRandoms()
		c.mu.Unlock()
	}
	return n, err
}

// takeRandoms copies the randoms out of the trackers once they are seen.
func (c *Capture) takeRandoms() {
	for _, t := range []*recordTracker{&c.in, &c.out} {
		if !t.hello.found {
			continue
		}
		if t.hello.want == msgClientHello && !c.haveCR {
			c.clientRandom, c.haveCR = t.hello.random, true
		}
		if t.hello.want == msgServerHello && !c.haveSR {
			c.serverRandom, c.haveSR = t.hello.random, true
		}
	}
}

// recordTracker follows the records in one direction of the byte stream.
type recordTracker struct {
	hdr      [RecordHeaderLen]byte
	hdrN     int   // header bytes of the current record seen so far
	left     int   // body bytes of the current record still to come
	typ      uint8 // content type of the current record
	total    int64 // bytes seen
	start    int64 // offset of the current record
	sawCCS   bool
	afterCCS int // complete records after the first ChangeCipherSpec
	hello    helloParser
}

// partial reports whether the stream stops inside a record.
func (t *recordTracker) partial() bool { return t.hdrN > 0 || t.left > 0 }

// consumed is how many bytes of the current, unfinished record were seen.
func (t *recordTracker) consumed() int64 { return t.total - t.start }

// limit is the number of bytes up to the end of the current record, or of
// the next header.
func (t *recordTracker) limit() int {
	if t.left > 0 {
		return t.left
	}
	return RecordHeaderLen - t.hdrN
}

func (t *recordTracker) feed(b []byte) {
	for len(b) > 0 {
		if t.left == 0 {
			n := copy(t.hdr[t.hdrN:], b)
			t.hdrN += n
			t.total += int64(n)
			b = b[n:]
			if t.hdrN < RecordHeaderLen {
				return
			}
			t.hdrN = 0
			t.typ = t.hdr[0]
			t.left = int(binary.BigEndian.Uint16(t.hdr[3:5]))
			if t.left == 0 {
				t.endRecord()
			}
			continue
		}
		n := min(len(b), t.left)
		if t.typ == contentHandshake {
			t.hello.feed(b[:n])
		}
		t.left -= n
		t.total += int64(n)
		b = b[n:]
		if t.left == 0 {
			t.endRecord()
		}
	}
}

func (t *recordTracker) endRecord() {
	if t.sawCCS {
		t.afterCCS++
	}
	if t.typ == contentChangeCipherSpec {
		t.sawCCS = true
	}
	t.start = t.total
}

// Handshake message types (RFC 8446 section 4).
const (
	msgClientHello = 1
	msgServerHello = 2
)

// helloRetryRandom is the random of a TLS 1.3 HelloRetryRequest, which is
// sent as a ServerHello (RFC 8446 section 4.1.3).
var helloRetryRandom = [32]byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// helloParser reads the handshake messages of one direction until the
// hello it wants: the first message of its direction, after any
// HelloRetryRequest. Only the first 38 bytes of a message are kept: type,
// length, legacy_version, random.
type helloParser struct {
	want   uint8
	found  bool
	random [32]byte
	msg    [4 + 2 + 32]byte
	msgN   int
	skip   int // bytes of the current message still to skip
	hrr    int // HelloRetryRequests skipped
}

func (h *helloParser) feed(b []byte) {
	const hello = len(h.msg) - 4 // legacy_version and random
	for len(b) > 0 && !h.found {
		if h.skip > 0 {
			n := min(h.skip, len(b))
			h.skip -= n
			b = b[n:]
			continue
		}
		need := 4
		if h.msgN >= 4 {
			need = len(h.msg)
		}
		n := copy(h.msg[h.msgN:need], b)
		h.msgN += n
		b = b[n:]
		if h.msgN < need {
			return
		}
		length := int(h.msg[1])<<16 | int(h.msg[2])<<8 | int(h.msg[3])
		if h.msgN == 4 {
			if h.msg[0] != h.want || length < hello {
				// Another message: skip it.
				h.skip, h.msgN = length, 0
			}
			continue
		}
		h.msgN = 0
		var random [32]byte
		copy(random[:], h.msg[6:])
		if h.want == msgServerHello && random == helloRetryRandom {
			// A HelloRetryRequest: the ServerHello comes later.
			h.skip = length - hello
			h.hrr++
			continue
		}
		h.random, h.found = random, true
	}
}

// captureKeyLog is the KeyLogWriter of a Capture's config.
type captureKeyLog Capture

// Write takes NSS key log lines ("LABEL <client random> <secret>"): it
// keeps CLIENT_RANDOM (TLS 1.2 master secret), CLIENT_TRAFFIC_SECRET_0 and
// SERVER_TRAFFIC_SECRET_0 (TLS 1.3) and ignores the others.
func (k *captureKeyLog) Write(p []byte) (int, error) {
	c := (*Capture)(k)
	c.mu.Lock()
	next := c.next
	c.logBuf = append(c.logBuf, p...)
	for {
		i := bytes.IndexByte(c.logBuf, '\n')
		if i < 0 {
			break
		}
		c.keyLogLine(c.logBuf[:i])
		c.logBuf = c.logBuf[i+1:]
	}
	if len(c.logBuf) == 0 {
		c.logBuf = nil
	}
	c.mu.Unlock()
	if next != nil {
		return next.Write(p)
	}
	return len(p), nil
}

// keyLogLine handles one line, without its newline.
func (c *Capture) keyLogLine(line []byte) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return
	}
	var dst *[]byte
	switch string(f[0]) {
	case "CLIENT_RANDOM":
		dst = &c.master
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &c.clientSecret
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &c.serverSecret
	default:
		return
	}
	var cr [32]byte
	secret := make([]byte, hex.DecodedLen(len(f[2])))
	if hex.DecodedLen(len(f[1])) != len(cr) {
		c.setLogErr(fmt.Errorf("ktlsbridge: key log %s: bad client random", f[0]))
		return
	}
	if _, err := hex.Decode(cr[:], f[1]); err != nil {
		c.setLogErr(fmt.Errorf("ktlsbridge: key log %s: %w", f[0], err))
		return
	}
	if _, err := hex.Decode(secret, f[2]); err != nil {
		c.setLogErr(fmt.Errorf("ktlsbridge: key log %s: %w", f[0], err))
		return
	}
	if c.haveLogCR && cr != c.logCR {
		c.setLogErr(errors.New("ktlsbridge: key log lines of two connections in one capture (config shared?)"))
		return
	}
	c.logCR, c.haveLogCR = cr, true
	*dst = secret
}

func (c *Capture) setLogErr(err error) {
	if c.logErr == nil {
		c.logErr = err
	}
}

package recordlayer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
)

// memConn is one end of an in-memory datagram link, a net.PacketConn for
// pion. A datagram written to one end arrives at the other end's inbox,
// unless that end has a tap set: then it goes to the tap instead and pion
// never sees it, which is what kvpn's demultiplexer does after takeover.
type memConn struct {
	laddr, raddr net.Addr
	peer         *memConn
	inbox        chan []byte
	tap          atomic.Pointer[chan []byte]
	// drop, if set, is asked about every datagram arriving here.
	drop atomic.Pointer[func([]byte) bool]

	logMu sync.Mutex
	log   [][]byte // every datagram that arrived, for inspection

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed when the read deadline changes

	done      chan struct{}
	closeOnce sync.Once
}

func memPipe() (a, b *memConn) {
	aAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001}
	bAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40002}
	a = &memConn{laddr: aAddr, raddr: bAddr, inbox: make(chan []byte, 256), changed: make(chan struct{}), done: make(chan struct{})}
	b = &memConn{laddr: bAddr, raddr: aAddr, inbox: make(chan []byte, 256), changed: make(chan struct{}), done: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

// deliver puts a datagram into c as if it came from the peer.
func (c *memConn) deliver(p []byte) {
	p = bytes.Clone(p)
	c.logMu.Lock()
	c.log = append(c.log, p)
	c.logMu.Unlock()
	if f := c.drop.Load(); f != nil && (*f)(p) {
		return
	}
	if t := c.tap.Load(); t != nil {
		*t <- p
		return
	}
	select {
	case c.inbox <- p:
	default: // a full socket buffer drops, like UDP
	}
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, changed := c.deadline, c.changed
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p := <-c.inbox:
			return copy(b, p), c.raddr, nil
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
		case <-c.done:
			return 0, nil, net.ErrClosed
		}
	}
}

func (c *memConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.peer.deliver(p)
	return len(p), nil
}

func (c *memConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr { return c.laddr }

func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// pionPair is a client and a server pion Conn after a completed handshake
// over a memPipe.
type pionPair struct {
	client, server       *dtls.Conn
	clientEnd, serverEnd *memConn
	ck, sk               Keys // KeysFromConn of each side
}

func pskConfig(suite dtls.CipherSuiteID) *dtls.Config {
	return &dtls.Config{
		PSK: func(identity []byte) ([]byte, error) {
			return []byte("kvpn test pre-shared key, 32 by"), nil
		},
		PSKIdentityHint: []byte("psk"),
		CipherSuites:    []dtls.CipherSuiteID{suite},
	}
}

func certConfigs(t *testing.T, suite dtls.CipherSuiteID) (client, server *dtls.Config) {
	cert, err := selfsign.GenerateSelfSigned() // ECDSA P-256
	if err != nil {
		t.Fatal(err)
	}
	server = &dtls.Config{Certificates: []tls.Certificate{cert}, CipherSuites: []dtls.CipherSuiteID{suite}}
	client = &dtls.Config{InsecureSkipVerify: true, CipherSuites: []dtls.CipherSuiteID{suite}}
	return client, server
}

// handshake runs a real pion DTLS 1.2 handshake in memory and exports both
// sides' keys.
func handshake(t *testing.T, clientCfg, serverCfg *dtls.Config) *pionPair {
	t.Helper()
	p := handshakeOnly(t, clientCfg, serverCfg)
	var err error
	if p.ck, err = KeysFromConn(p.client); err != nil {
		t.Fatal(err)
	}
	if p.sk, err = KeysFromConn(p.server); err != nil {
		t.Fatal(err)
	}
	return p
}

// handshakeOnly is handshake without the key export.
func handshakeOnly(t *testing.T, clientCfg, serverCfg *dtls.Config) *pionPair {
	t.Helper()
	ce, se := memPipe()
	server, err := dtls.Server(se, ce.laddr, serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dtls.Client(ce, se.laddr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	// Closing pion is fine in a test; kvpn never closes it after takeover.
	t.Cleanup(func() {
		ce.Close()
		se.Close()
		client.Close()
		server.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return &pionPair{client: client, server: server, clientEnd: ce, serverEnd: se}
}

// pionRead reads one application-data payload from a pion Conn.
func pionRead(t *testing.T, c *dtls.Conn) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("pion Read: %v", err)
	}
	return b[:n]
}

func readTap(t *testing.T, tap chan []byte) []byte {
	t.Helper()
	select {
	case d := <-tap:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram from pion")
		return nil
	}
}

func payload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}

// sealInto seals p with s from a fresh buffer with exactly the room needed.
func sealInto(t testing.TB, s *Sealer, p []byte, ct ContentType) []byte {
	t.Helper()
	buf := make([]byte, s.Headroom()+len(p)+s.Tailroom())
	copy(buf[s.Headroom():], p)
	rec, err := s.Seal(buf, s.Headroom(), len(p), ct)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestKeysFromPionRejects: states the record layer cannot use are refused.
func TestKeysFromPionRejects(t *testing.T) {
	if _, err := KeysFromPion([]byte("not a gob")); err == nil {
		t.Error("garbage accepted")
	}
	if _, err := KeysFromPion(nil); err == nil {
		t.Error("empty state accepted")
	}
	// A pion suite we do not implement (CCM).
	p := handshakeOnly(t, pskConfig(dtls.TLS_PSK_WITH_AES_128_CCM), pskConfig(dtls.TLS_PSK_WITH_AES_128_CCM))
	st, ok := p.client.ConnectionState()
	if !ok {
		t.Fatal("no state")
	}
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := KeysFromPion(b); !errors.Is(err, ErrSuite) {
		t.Errorf("CCM suite: %v, want ErrSuite", err)
	}
}

// threeInOneDatagram sends three records sealed by cs in one datagram from
// the client's end and checks that pion's server reads each (RFC 6347
// section 4.1.1).
func threeInOneDatagram(t *testing.T, p *pionPair, cs *Sealer) {
	t.Helper()
	var dg []byte
	for i := range 3 {
		dg = append(dg, sealInto(t, cs, payload(50, byte(10+i)), ApplicationData)...)
	}
	p.clientEnd.WriteTo(dg, p.serverEnd.laddr)
	for i := range 3 {
		if got := pionRead(t, p.server); !bytes.Equal(got, payload(50, byte(10+i))) {
			t.Fatalf("record %d of a datagram: pion read %x", i, got)
		}
	}
}

// bothOpen seals a record with ss, sends it from se to pion's client over
// ce, and checks that pion and our opener co both read it.
func bothOpen(t *testing.T, ss *Sealer, co *Opener, se, ce *memConn, client *dtls.Conn) {
	t.Helper()
	want := payload(300, 7)
	rec := sealInto(t, ss, want, ApplicationData)
	se.WriteTo(bytes.Clone(rec), ce.laddr)
	if got := pionRead(t, client); !bytes.Equal(got, want) {
		t.Fatal("pion client read the wrong payload")
	}
	if _, got, err := co.Open(rec); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("our opener: %v", err)
	}
}

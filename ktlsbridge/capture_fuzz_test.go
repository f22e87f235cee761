package ktlsbridge

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// ktChunkConn is a net.Conn whose Read serves a fixed byte stream in
// chunks of the sizes cuts names in turn (at least one byte each), then
// io.EOF. Only Read is implemented: what the record readers call.
type ktChunkConn struct {
	net.Conn
	data []byte
	cuts []byte
	i    int
}

func (c *ktChunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.cuts) > 0 {
		n = min(n, ktCutSize(c.cuts[c.i%len(c.cuts)]))
		c.i++
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

// ktCutSize spreads a fuzzed byte over read sizes from 1 to about 17 KB:
// small ones cut headers apart, large ones take several records at once.
func ktCutSize(b byte) int {
	if b < 128 {
		return int(b) + 1
	}
	return int(b-127) * 130
}

// ktRefRecords splits a stream as the TLS record layer does (RFC 8446
// section 5.1: 5-byte header, 16-bit length): the offsets where records
// and their bodies start, whether the stream ends inside a record, and the
// handshake bytes (the bodies of content type 22), in order.
func ktRefRecords(stream []byte) (bounds []int, partial bool, hs []byte, afterCCS int) {
	sawCCS := false
	pos := 0
	for pos < len(stream) {
		bounds = append(bounds, pos)
		if len(stream)-pos < RecordHeaderLen {
			return bounds, true, hs, afterCCS
		}
		typ := stream[pos]
		n := int(binary.BigEndian.Uint16(stream[pos+3:]))
		bounds = append(bounds, pos+RecordHeaderLen)
		end := pos + RecordHeaderLen + n
		if end > len(stream) {
			if typ == contentHandshake {
				hs = append(hs, stream[pos+RecordHeaderLen:]...)
			}
			return bounds, true, hs, afterCCS
		}
		if typ == contentHandshake {
			hs = append(hs, stream[pos+RecordHeaderLen:end]...)
		}
		if sawCCS {
			afterCCS++
		}
		if typ == contentChangeCipherSpec {
			sawCCS = true
		}
		pos = end
	}
	return bounds, false, hs, afterCCS
}

// ktRefHello finds the random of the first handshake message of type want
// (after any HelloRetryRequest when want is ServerHello) in hs, as RFC 8446
// section 4 lays messages out: type, 24-bit length, then for a hello
// legacy_version and the 32-byte random.
func ktRefHello(hs []byte, want uint8) (random [32]byte, found bool) {
	for off := 0; off+4 <= len(hs); {
		typ := hs[off]
		n := int(hs[off+1])<<16 | int(hs[off+2])<<8 | int(hs[off+3])
		if typ == want && n >= 2+32 {
			if off+4+2+32 > len(hs) {
				return [32]byte{}, false
			}
			copy(random[:], hs[off+6:])
			if want != msgServerHello || random != helloRetryRandom {
				return random, true
			}
			random = [32]byte{} // a HelloRetryRequest: not the hello
		}
		off += 4 + n
	}
	return [32]byte{}, false
}

// FuzzCaptureRead: the capture's record-boundary reader, fed an arbitrary
// byte stream (what a peer sends before it is authenticated) through reads
// of arbitrary sizes, passes every byte through in order, never returns
// bytes of two records (or of a header and a body) in one Read, knows
// whether the stream stopped inside a record, and takes the hello random
// the reference parser finds, whichever way the stream is cut.
func FuzzCaptureRead(f *testing.F) {
	hello := func(typ uint8, random byte, extra int) []byte {
		body := make([]byte, 4+2+32+extra)
		body[0] = typ
		n := len(body) - 4
		body[1], body[2], body[3] = byte(n>>16), byte(n>>8), byte(n)
		body[4], body[5] = 3, 3
		for i := range 32 {
			body[6+i] = random + byte(i)
		}
		return body
	}
	rec := func(typ uint8, body []byte) []byte {
		r := []byte{typ, 3, 3, byte(len(body) >> 8), byte(len(body))}
		return append(r, body...)
	}
	ch := hello(msgClientHello, 1, 100)
	hrr := hello(msgServerHello, 0, 20)
	copy(hrr[6:], helloRetryRandom[:])
	sh := hello(msgServerHello, 2, 40)
	// A ClientHello in one record, then data read ahead.
	f.Add(true, append(rec(contentHandshake, ch), rec(contentApplicationData, []byte("ahead"))...), []byte{3, 200})
	// A ClientHello split over two records and cut into single bytes.
	f.Add(true, append(rec(contentHandshake, ch[:10]), rec(contentHandshake, ch[10:])...), []byte{0})
	// HelloRetryRequest, then the ServerHello in the same record.
	f.Add(false, rec(contentHandshake, append(append([]byte{}, hrr...), sh...)), []byte{4, 17})
	// Another message first, a CCS, a zero-length record, a truncation.
	other := append([]byte{11, 0, 0, 3, 1, 2, 3}, sh...)
	f.Add(false, append(append(append(rec(contentHandshake, other), rec(contentChangeCipherSpec, []byte{1})...), rec(contentHandshake, nil)...), 22, 3, 3, 0x40), []byte{255, 1})
	f.Add(true, []byte{22, 3, 1, 0xff, 0xff, 1, 0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, server bool, stream, cuts []byte) {
		raw := &ktChunkConn{data: stream}
		c := NewCapture(raw, server)
		conn := c.Conn()
		bounds, partial, hs, afterCCS := ktRefRecords(stream)
		var got []byte
		buf := make([]byte, 20000)
		for i := 0; ; i++ {
			size := len(buf)
			if len(cuts) > 0 {
				size = ktCutSize(cuts[i%len(cuts)])
			}
			n, err := conn.Read(buf[:size])
			if n > 0 {
				// [start, end) must not contain a record or body start
				// other than at start.
				start, end := len(got), len(got)+n
				for _, b := range bounds {
					if b > start && b < end {
						t.Fatalf("a Read of %d bytes at %d crosses the boundary at %d", n, start, b)
					}
				}
				got = append(got, buf[:n]...)
			}
			if err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
			if n == 0 {
				t.Fatal("Read returned nothing and no error")
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("read %d bytes, not the %d of the stream", len(got), len(stream))
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.in.partial() != partial {
			t.Fatalf("partial %v, want %v", c.in.partial(), partial)
		}
		if c.in.afterCCS != afterCCS {
			t.Fatalf("%d records after CCS, want %d", c.in.afterCCS, afterCCS)
		}
		want := uint8(msgServerHello)
		if server {
			want = msgClientHello
		}
		random, found := ktRefHello(hs, want)
		gotRandom, gotFound := c.serverRandom, c.haveSR
		if server {
			gotRandom, gotFound = c.clientRandom, c.haveCR
		}
		if gotFound != found || gotRandom != random {
			t.Fatalf("hello random %v %x, want %v %x", gotFound, gotRandom, found, random)
		}
	})
}

// ktPeerConn is a ktChunkConn that also takes writes: the side of the
// connection crypto/tls drives in a fuzzed handshake.
type ktPeerConn struct {
	ktChunkConn
	out bytes.Buffer
}

func (c *ktPeerConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// FuzzCaptureServerHandshake: a crypto/tls server handshake through a
// Capture, over whatever a client sends first (the bytes vpnd reads from
// anyone before authentication; the seeds are real ClientHellos of TLS 1.2
// and 1.3), cut anywhere, never panics, never completes (the client cannot
// know the server's keys), and Finish refuses it. Whenever crypto/tls took
// a ClientHello far enough to answer with a ServerHello, the capture saw
// that ClientHello's random, and the ServerHello's.
func FuzzCaptureServerHandshake(f *testing.F) {
	cert, _ := ktCerts(f)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c := &ktPeerConn{}
		tls.Client(c, &tls.Config{ServerName: "ktlsbridge.test", InsecureSkipVerify: true, MaxVersion: v}).Handshake()
		f.Add(c.out.Bytes(), []byte{})
		f.Add(c.out.Bytes(), []byte{4, 0, 200})
		// The ClientHello twice: a client answering a HelloRetryRequest
		// nobody sent.
		f.Add(append(bytes.Clone(c.out.Bytes()), c.out.Bytes()...), []byte{})
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		raw := &ktPeerConn{ktChunkConn: ktChunkConn{data: stream, cuts: cuts}}
		c := NewCapture(raw, true)
		tc := tls.Server(c.Conn(), c.Config(&tls.Config{Certificates: []tls.Certificate{cert}}))
		if err := tc.Handshake(); err == nil {
			t.Fatal("handshake completed over fuzzed bytes")
		}
		if _, err := c.Finish(tc.ConnectionState()); err == nil {
			t.Fatal("Finish accepted an incomplete handshake")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.out.hello.found && (!c.haveCR || !c.haveSR) {
			t.Fatalf("a ServerHello went out but the capture has randoms %v/%v", c.haveCR, c.haveSR)
		}
		// The randoms are those the reference parser finds in each
		// direction's whole stream.
		_, _, hs, _ := ktRefRecords(stream)
		if cr, _ := ktRefHello(hs, msgClientHello); c.haveCR && cr != c.clientRandom {
			t.Fatalf("client random %x, want %x", c.clientRandom, cr)
		}
		_, _, hs, _ = ktRefRecords(raw.out.Bytes())
		if sr, _ := ktRefHello(hs, msgServerHello); c.haveSR && sr != c.serverRandom {
			t.Fatalf("server random %x, want %x", c.serverRandom, sr)
		}
	})
}

package ktlsbridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// ktGatedConn delays each Read until the peer has finished what it does
// right after its handshake, or until a short wait is over: so when our
// crypto/tls reads the peer's last handshake flight, whatever the peer sent
// behind it is already in the socket and crypto/tls could read it ahead.
type ktGatedConn struct {
	net.Conn
	open <-chan struct{}
}

func (g *ktGatedConn) Read(p []byte) (int, error) {
	select {
	case <-g.open:
	case <-time.After(40 * time.Millisecond):
	}
	return g.Conn.Read(p)
}

// TestCaptureReadAhead: the peer sends application data right behind its
// last handshake message; with the Capture, crypto/tls takes none of it,
// Finish reports no error, and our Opener reads it from the socket at the
// first sequence number. (It matters for the TLS 1.3 server, which reads
// the client's Finished, and the TLS 1.2 client, which reads the server's;
// the other two roles finish reading before the peer can send data.)
func TestCaptureReadAhead(t *testing.T) {
	cases := []ktCase{
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256},
	}
	ktRoles(t, cases, func(t *testing.T, c ktCase, ourServer bool) {
		big, small := ktPayload(MaxPlaintext, 1), ktPayload(100, 2)
		open := make(chan struct{})
		s, err := ktHandshake(t, c, ktOpts{
			ourServer: ourServer,
			ourConn:   func(raw net.Conn) net.Conn { return &ktGatedConn{raw, open} },
			peerAfter: func(peer *tls.Conn) error {
				if _, err := peer.Write(big); err != nil {
					return err
				}
				_, err := peer.Write(small)
				return err
			},
			peerDone: func(error, *tls.Conn) { close(open) },
		})
		if err != nil {
			t.Fatalf("Finish: %v", err)
		}
		op, err := NewOpener(s.rx)
		if err != nil {
			t.Fatal(err)
		}
		rr := &ktRecordReader{conn: s.raw}
		for i, want := range [][]byte{big, small} {
			typ, pt, err := op.Open(rr.next(t))
			if err != nil || typ != contentApplicationData || !bytes.Equal(pt, want) {
				t.Fatalf("record %d (seq %d): type %d, %d bytes, %v; want %d bytes of data",
					i, s.rx.Seq+uint64(i), typ, len(pt), err, len(want))
			}
		}
	})
}

// TestCaptureReadAheadDetected: with the record-boundary limit switched off
// (a test hook), crypto/tls reads the peer's data ahead, as it does on a
// bare connection, and Finish reports it.
func TestCaptureReadAheadDetected(t *testing.T) {
	for _, tc := range []struct {
		c         ktCase
		ourServer bool
	}{
		{ktCase{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, false},
		{ktCase{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256}, true},
	} {
		t.Run(tc.c.String(), func(t *testing.T) {
			open := make(chan struct{})
			_, err := ktHandshake(t, tc.c, ktOpts{
				ourServer: tc.ourServer,
				ourConn:   func(raw net.Conn) net.Conn { return &ktGatedConn{raw, open} },
				capture:   func(c *Capture) { c.unbounded = true },
				peerAfter: func(peer *tls.Conn) error {
					_, err := peer.Write(ktPayload(MaxPlaintext, 3))
					return err
				},
				peerDone: func(error, *tls.Conn) { close(open) },
			})
			if !errors.Is(err, errReadAhead) {
				t.Fatalf("Finish: %v, want %v", err, errReadAhead)
			}
			t.Logf("Finish: %v", err)
		})
	}
}

package recordtest

import (
	"crypto/tls"
	"io"
	"net"
	"time"

	"kvpn/record"
)

// Stream is a record.Conn without TLS, for tests that feed a connection's
// decrypted bytes straight to the code above the record layer (fuzz
// targets of the login phase and of the CSTP frame reader).
type Stream struct {
	// R supplies what the peer sent.
	R io.Reader
	// Record, when set, is handed each record written: each Write, and
	// each buffer of WriteRecords past its offset (valid during the call).
	Record func(p []byte)
	// Remote is RemoteAddr's answer (192.0.2.9:40000 when nil).
	Remote net.Addr
}

var _ record.Conn = (*Stream)(nil)

func (s *Stream) Read(p []byte) (int, error) { return s.R.Read(p) }

func (s *Stream) Write(p []byte) (int, error) {
	if s.Record != nil {
		s.Record(p)
	}
	return len(p), nil
}

func (s *Stream) WriteRecords(bufs [][]byte, offset int) error {
	for _, b := range bufs {
		s.Write(b[offset:])
	}
	return nil
}

func (s *Stream) RemoteAddr() net.Addr {
	if s.Remote != nil {
		return s.Remote
	}
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 40000}
}

func (s *Stream) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443}
}

func (s *Stream) Close() error                         { return nil }
func (s *Stream) SetDeadline(time.Time) error          { return nil }
func (s *Stream) SetReadDeadline(time.Time) error      { return nil }
func (s *Stream) SetWriteDeadline(time.Time) error     { return nil }
func (s *Stream) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }
func (s *Stream) Engine() record.Engine                { return record.Engine{TX: "test", RX: "test"} }
func (s *Stream) Describe() string                     { return "test stream" }
func (s *Stream) SetCoalesce(bool)                     {}

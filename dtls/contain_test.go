package dtls

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/udp"
)

// TestReaderPanicRestarts: a panic in a socket's reader (shared by every
// session) is recovered and counted, and the reader starts again: the
// datagrams after it are handled.
func TestReaderPanicRestarts(t *testing.T) {
	conn, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ListenerConfig{Conn: conn, Sink: &tunRecorder{}, Log: quietLog(),
		Find: func([]byte) (Match, bool) { return Match{}, false }})
	var calls atomic.Int32
	l.testPanic = func() {
		if calls.Add(1) == 1 {
			panic("injected fault in the DTLS reader")
		}
	}
	done := make(chan struct{})
	go func() { l.Serve(); close(done) }()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	c := listenUDP(t, "127.0.0.1:0")
	defer c.Close()
	srv := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	c.WriteToUDPAddrPort([]byte{23}, srv) // read, then the reader panics
	waitFor(t, "a reader panic", func() bool { return l.Counters.ReaderPanics.Load() == 1 })
	// Handled by the restarted reader: application data matching no peer.
	waitFor(t, "a datagram handled after the panic", func() bool {
		c.WriteToUDPAddrPort([]byte{23}, srv)
		time.Sleep(10 * time.Millisecond)
		return l.Counters.NoSession.Load() > 0
	})
	if n := l.Counters.ReaderPanics.Load(); n != 1 {
		t.Fatalf("reader panics %d, want 1", n)
	}
}

// failingSocket fails every read until closed, and counts them.
type failingSocket struct {
	reads  atomic.Int64
	closed atomic.Bool
}

func (s *failingSocket) ReadBatch([]udp.Message) (int, error) {
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	s.reads.Add(1)
	return 0, errors.New("recvmmsg: no buffer space available")
}

func (s *failingSocket) EnableGRO() bool { return false }

// TestReadErrorsBackOff: a socket whose every read fails does not turn
// its reader into a spin: reads are paced by a backoff (a spin makes well
// over 10,000 in 200 ms), and each is counted.
func TestReadErrorsBackOff(t *testing.T) {
	l := NewListener(ListenerConfig{Sink: &tunRecorder{}, Log: quietLog()})
	sock := &failingSocket{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.serve(sock)
	}()
	time.Sleep(200 * time.Millisecond)
	reads := sock.reads.Load()
	sock.closed.Store(true)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the reader did not return after its socket closed")
	}
	t.Logf("%d failed reads in 200 ms", reads)
	if reads == 0 || reads >= 20 {
		t.Fatalf("%d failed reads in 200 ms: want a few (backoff from 1 ms), not 0 and not a spin", reads)
	}
	if n := l.Counters.ReadErrors.Load(); n != uint64(sock.reads.Load()) {
		t.Fatalf("read errors counted %d, reads failed %d", n, sock.reads.Load())
	}
}

// TestHandshakePanicClosesPeer: a panic in a handshake's goroutine (here
// in the owner's PeerUp) is recovered and counted, closes that peer only,
// and the listener goes on: the next handshake completes.
func TestHandshakePanicClosesPeer(t *testing.T) {
	s := newTestServer(t, false)
	var ups atomic.Int32
	s.owner.setOnUp(func(*Peer) {
		if ups.Add(1) == 1 {
			panic("injected fault in PeerUp")
		}
	})
	s.dial(t, s.addr)
	first := s.waitPeer(t, 1)
	waitFor(t, "a handshake panic", func() bool { return s.l.Counters.HandshakePanics.Load() == 1 })
	waitFor(t, "the panicked peer closed", func() bool { return !first.Up() })
	c, p := s.connect(t, s.addr)
	if !p.Up() || c == nil {
		t.Fatal("the handshake after the panic did not bring a peer up")
	}
	if n := s.l.Counters.HandshakePanics.Load(); n != 1 {
		t.Fatalf("handshake panics %d, want 1", n)
	}
}

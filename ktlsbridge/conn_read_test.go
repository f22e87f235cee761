package ktlsbridge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"kvpn/record"
)

// TestSmallReads: a reader with small buffers (bufio near its end does
// this) must not lose data.
func TestSmallReads(t *testing.T) {
	srv, cli := pair(t, variants[0], mode(ModeAuto), mode(ModeAuto))
	want := payload(100000, 3)
	go writeAll(cli, want)
	got := make([]byte, 0, len(want))
	buf := make([]byte, 7)
	for len(got) < len(want) {
		n, err := srv.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data lost or corrupted with small reads")
	}
}

// TestReadEndOfStream: a peer whose TCP connection ends without
// close_notify, by FIN or by reset, ends our Read with an error (io.EOF
// or the socket's), never (0, nil): on a kTLS RX socket recvmsg reports
// the end as 0 bytes without a record type, which Read returned as an
// empty read, so the session's reader spun and never saw its connection
// go (found by the e2e suite in the kTLS VM, where `ss -K` on vpnd's
// socket left the session attached to a dead connection).
func TestReadEndOfStream(t *testing.T) {
	for _, reset := range []bool{false, true} {
		srv, peer, _ := pairCounting(t, variants[0])
		raw := peer.NetConn().(*recordCounter).Conn.(*net.TCPConn)
		if reset {
			raw.SetLinger(0)
		}
		raw.Close()
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := 0; ; i++ {
			n, err := srv.Read(make([]byte, 2048))
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("reset=%v: Read did not see the end of the stream", reset)
				}
				t.Logf("reset=%v: %v (tx=%s rx=%s)", reset, err, srv.Engine().TX, srv.Engine().RX)
				break
			}
			if i > 0 {
				t.Fatalf("reset=%v: Read returned (%d, nil) after the peer's connection ended", reset, n)
			}
		}
	}
}

// TestReadTakesBufferedRecords: records already received leave in one
// Read (a frame reader then gets a burst, not one frame per record), and
// a close_notify behind them still ends the stream after their data.
func TestReadTakesBufferedRecords(t *testing.T) {
	srv, cli := pair(t, variants[0], mode(ModeAuto), mode(ModeAuto))
	c := cli.(*Conn)
	bufs := make([][]byte, 10)
	for i := range bufs {
		b := make([]byte, record.Headroom+100+record.Tailroom)
		for j := record.Headroom; j < record.Headroom+100; j++ {
			b[j] = byte(i)
		}
		bufs[i] = b[:record.Headroom+100]
	}
	if err := c.WriteRecords(bufs, record.Headroom); err != nil {
		t.Fatal(err)
	}
	c.Close()                          // close_notify after the ten records
	time.Sleep(100 * time.Millisecond) // all of it in the server's socket
	p := make([]byte, 64<<10)
	n, err := srv.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if expectKernel {
		// The kernel's own RX merges records of one type itself.
		t.Logf("one Read returned %d bytes", n)
	} else if n != 1000 {
		t.Fatalf("one Read returned %d bytes, want all ten records' 1000", n)
	}
	rest, err := io.ReadAll(srv)
	got := append(p[:n:n], rest...)
	if err != nil || len(got) != 1000 {
		t.Fatalf("read %d bytes then %v; want 1000 then EOF", len(got), err)
	}
	for i := range 10 {
		if !bytes.Equal(got[i*100:(i+1)*100], bytes.Repeat([]byte{byte(i)}, 100)) {
			t.Fatalf("record %d corrupted", i)
		}
	}
}

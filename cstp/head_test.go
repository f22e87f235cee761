package cstp

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// endless is a header line that never ends, as a hostile peer sends it.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	if e.n == 0 {
		head := "HTTP/1.1 200 OK\r\nX-Junk: "
		e.n += copy(p, head)
		return len(head), nil
	}
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	return len(p), nil
}

// TestReadResponseBounded: a server whose answer has a header line that
// never ends costs vpnc an error after a bounded read, not its memory
// (http.ReadResponse alone buffers it all).
func TestReadResponseBounded(t *testing.T) {
	src := &endless{}
	br := bufio.NewReaderSize(src, 8+0xffff)
	_, err := ReadResponse(br, http.MethodConnect)
	var big *HeadTooLargeError
	if !errors.As(err, &big) {
		t.Fatalf("ReadResponse = %v, want a HeadTooLargeError", err)
	}
	if src.n > 2*br.Size() {
		t.Fatalf("read %d bytes of an endless header before refusing it", src.n)
	}
}

// TestReadResponseKeepsFrames: an answer within the bounds parses, and the
// bytes behind its head (the first CSTP frames) stay in the reader.
func TestReadResponseKeepsFrames(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("HTTP/1.1 200 OK\r\nX-CSTP-MTU: 1400\r\n\r\nSTF\x01"), 8+0xffff)
	resp, err := ReadResponse(br, http.MethodConnect)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-CSTP-MTU") != "1400" {
		t.Fatalf("header %q", resp.Header.Get("X-CSTP-MTU"))
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "STF\x01" {
		t.Fatalf("left %q behind the head", rest)
	}
}

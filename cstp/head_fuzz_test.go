package cstp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// chunkReader hands out at most n bytes a read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// FuzzPeekHead: PeekHead accepts a head only when it ends within
// MaxHeadBytes, refuses with 414/431 otherwise, never consumes bytes, and
// a head it accepted is one http.ReadRequest reads without reading past
// the buffer.
func FuzzPeekHead(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\n\r\nbody"), 7)
	f.Add([]byte("GET / HTTP/1.1\n\n"), 1)
	f.Add([]byte("CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nCookie: webvpn=x\r\n\r\nSTF\x01\x00\x00\x03\x00"), 1000)
	f.Add([]byte("POST /"+strings.Repeat("a", MaxStartLine)+" HTTP/1.1\r\n\r\n"), 4096)
	f.Add([]byte("POST / HTTP/1.1\r\n"+strings.Repeat("a: b\r\n", MaxHeaderLines+1)+"\r\n"), 512)
	f.Add([]byte("\r\n"), 3)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk < 1 {
			chunk = 1
		}
		src := &countReader{r: chunkReader{bytes.NewReader(data), chunk}}
		br := bufio.NewReaderSize(src, 8+0xffff)
		err := PeekHead(br)
		if br.Buffered() != src.n {
			t.Fatalf("consumed %d of %d bytes read", src.n-br.Buffered(), src.n)
		}
		var big *HeadTooLargeError
		switch {
		case err == nil:
			buf, _ := br.Peek(br.Buffered())
			end := bytes.Index(buf, []byte("\n\r\n"))
			if e := bytes.Index(buf, []byte("\n\n")); e >= 0 && (end < 0 || e < end) {
				end = e
			}
			if !bytes.HasPrefix(buf, []byte("\n")) && !bytes.HasPrefix(buf, []byte("\r\n")) && (end < 0 || end > MaxHeadBytes) {
				t.Fatalf("accepted a head that does not end within %d bytes", MaxHeadBytes)
			}
			before := src.n
			if _, err := http.ReadRequest(br); err == nil && src.n != before {
				t.Fatalf("ReadRequest read %d more bytes after an accepted head", src.n-before)
			}
		case errors.As(err, &big):
			if big.Status != http.StatusRequestURITooLong && big.Status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d", big.Status)
			}
		}
	})
}

type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

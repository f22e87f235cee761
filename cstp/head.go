package cstp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
)

// Bounds on the head (start line and header lines) of every HTTP message
// read from a peer: vpnd bounds each request a connection sends (the login
// POSTs and the CONNECT alike), vpnc each answer a server sends.
// http.ReadRequest and http.ReadResponse have no bound of their own
// (net/http's Server adds MaxHeaderBytes around the former), so a header
// line that never ends would be buffered until the deadline.
// OpenConnect's requests are far below these: its CONNECT has about 20
// headers and under 2 KiB.
const (
	MaxHeadBytes   = 16 << 10 // the whole head, start line and blank line included
	MaxStartLine   = 4 << 10  // "METHOD URI HTTP/1.1\r\n" or "HTTP/1.1 200 OK\r\n"
	MaxHeaderLines = 100      // header lines (continuation lines count too)
)

// HeadTooLargeError is why PeekHead refused a head: the HTTP status to answer
// with and a description for the log.
type HeadTooLargeError struct {
	Status int    // 414 or 431
	What   string // for the log
}

func (e *HeadTooLargeError) Error() string { return e.What }

// PeekHead waits until br holds the whole head of the next message (a
// request or a response), without consuming it, so that http.ReadRequest
// or http.ReadResponse then parses bytes already bounded
// and buffered. Scanning the buffer instead of limiting the reader under br
// leaves br untouched: after the CONNECT's head, the bytes it holds are the
// tunnel's first CSTP frames. br must be larger than MaxHeadBytes
// (session.NewFrameReader's is 20 KiB).
//
// It returns a *HeadTooLargeError when the start line or the head is over
// its bound (414 URI Too Long, 431 Request Header Fields Too Large, RFC 6585
// section 5), and the read error otherwise; io.EOF means the peer closed
// between requests.
func PeekHead(br *bufio.Reader) error {
	limit := min(MaxHeadBytes, br.Size())
	// scanned is where the current line starts; searched is how far it
	// has been searched for its '\n', so a line trickling in a byte a read
	// is searched once, not once per byte.
	scanned, searched, lines := 0, 0, 0
	for {
		buf, _ := br.Peek(br.Buffered()) // what is there; does not read
		for {
			i := bytes.IndexByte(buf[searched:], '\n')
			if i < 0 {
				searched = len(buf)
				break
			}
			line := buf[scanned : searched+i+1]
			scanned += len(line)
			searched = scanned
			if lines == 0 && len(line) > MaxStartLine {
				return &HeadTooLargeError{http.StatusRequestURITooLong, "start line too long"}
			}
			if scanned > limit {
				return &HeadTooLargeError{http.StatusRequestHeaderFieldsTooLarge, "head too large"}
			}
			if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
				// The blank line that ends the head (textproto accepts a
				// bare LF as well). A blank first line is left for
				// ReadRequest to refuse.
				return nil
			}
			lines++
			if lines > MaxHeaderLines+1 {
				return &HeadTooLargeError{http.StatusRequestHeaderFieldsTooLarge, "too many header lines"}
			}
		}
		if lines == 0 && len(buf) > MaxStartLine {
			return &HeadTooLargeError{http.StatusRequestURITooLong, "start line too long"}
		}
		if len(buf) >= limit {
			return &HeadTooLargeError{http.StatusRequestHeaderFieldsTooLarge, "head too large"}
		}
		// Wait for at least one more byte (one read of the connection).
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// ReadResponse is http.ReadResponse on a head that PeekHead bounded first:
// vpnc reads what a possibly hostile server sends, and an endless header
// must cost it an error, not its memory.
func ReadResponse(br *bufio.Reader, method string) (*http.Response, error) {
	if err := PeekHead(br); err != nil {
		return nil, err
	}
	return http.ReadResponse(br, &http.Request{Method: method})
}

// MaxLoginAnswer bounds the body of a login answer that a client reads: a
// small XML document, so anything near this is a broken or hostile server.
const MaxLoginAnswer = 1 << 20

// ReadPostAnswer reads the answer to a login POST and its whole body, at
// most MaxLoginAnswer bytes.
func ReadPostAnswer(br *bufio.Reader) (*http.Response, []byte, error) {
	resp, err := ReadResponse(br, http.MethodPost)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxLoginAnswer+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > MaxLoginAnswer {
		return nil, nil, errors.New("login answer too large")
	}
	return resp, data, nil
}

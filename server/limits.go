package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// Bounds on the head (request line and header lines) of every HTTP request
// a connection sends, the login POSTs and the CONNECT alike. http.ReadRequest
// has no bound of its own (net/http's Server adds MaxHeaderBytes around it),
// so a header line that never ends would be buffered until the deadline.
// OpenConnect's requests are far below these: its CONNECT has about 20
// headers and under 2 KiB.
const (
	maxHeadBytes   = 16 << 10 // the whole head, request line and blank line included
	maxRequestLine = 4 << 10  // "METHOD URI HTTP/1.1\r\n"
	maxHeaderLines = 100      // header lines (continuation lines count too)
)

// headTooLarge is why peekHead refused a head: the HTTP status to answer
// with and a description for the log.
type headTooLarge struct {
	status int
	what   string
}

func (e *headTooLarge) Error() string { return e.what }

// peekHead waits until br holds the whole head of the next request, without
// consuming it, so that http.ReadRequest then parses bytes already bounded
// and buffered. Scanning the buffer instead of limiting the reader under br
// leaves br untouched: after the CONNECT's head, the bytes it holds are the
// tunnel's first CSTP frames. br must be larger than maxHeadBytes
// (session.NewFrameReader's is 64 KiB).
//
// It returns a *headTooLarge when the request line or the head is over its
// bound (414 URI Too Long, 431 Request Header Fields Too Large, RFC 6585
// section 5), and the read error otherwise; io.EOF means the peer closed
// between requests.
func peekHead(br *bufio.Reader) error {
	limit := min(maxHeadBytes, br.Size())
	scanned, lines := 0, 0 // bytes of whole lines seen, and how many
	for {
		buf, _ := br.Peek(br.Buffered()) // what is there; does not read
		for {
			i := bytes.IndexByte(buf[scanned:], '\n')
			if i < 0 {
				break
			}
			line := buf[scanned : scanned+i+1]
			scanned += i + 1
			if lines == 0 && len(line) > maxRequestLine {
				return &headTooLarge{http.StatusRequestURITooLong, "request line too long"}
			}
			if scanned > limit {
				return &headTooLarge{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
			}
			if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
				// The blank line that ends the head (textproto accepts a
				// bare LF as well). A blank first line is left for
				// ReadRequest to refuse.
				return nil
			}
			lines++
			if lines > maxHeaderLines+1 {
				return &headTooLarge{http.StatusRequestHeaderFieldsTooLarge, "too many header lines"}
			}
		}
		if lines == 0 && len(buf) > maxRequestLine {
			return &headTooLarge{http.StatusRequestURITooLong, "request line too long"}
		}
		if len(buf) >= limit {
			return &headTooLarge{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
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

// rateLog lets an event that an attacker can trigger at will be logged at
// most once per interval; the line then says how many were not logged.
type rateLog struct {
	last       atomic.Int64 // unix nanoseconds of the latest logged event
	suppressed atomic.Uint64
}

// logInterval is how often a rateLog lets a line through.
const logInterval = 10 * time.Second

// allow reports whether to log this event, and how many events were not
// logged since the latest one that was.
func (r *rateLog) allow() (bool, uint64) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(logInterval) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return false, 0
	}
	return true, r.suppressed.Swap(0)
}

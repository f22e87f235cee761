package session

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"kvpn/cstp"
)

// frameReader reads CSTP frames from the record connection; its buffer comes
// from a pool shared by every channel of the process and goes back as soon as it
// holds no unread byte: an idle session holds no receive buffer (64 KiB
// each, which for ten thousand sessions was 640 MiB), only one that is
// partly filled by a frame still arriving.
//
// Next's payload aliases the buffer and is valid until the following Next
// (the buffer is released or compacted only there).
type frameReader struct {
	src        io.Reader
	maxPayload int
	buf        *[]byte // nil while empty
	r, w       int
	pending    int   // bytes of the frame last returned, discarded by Next
	err        error // read error behind buffered bytes, returned once they are used
}

const (
	// frameBufSize holds the largest frame plus minRead: a frame's start
	// moved to the front always leaves minRead free for its rest.
	frameBufSize = cstp.HeaderLen + cstp.MaxPayload + minRead
	// minRead is the smallest free space a read is given: below 512 bytes
	// ktlsbridge.Conn.Read would go through its control-record buffer
	// (minControlRead), so frames are moved to the front first. Fewer
	// than a record's worth (2^14 + 256) also moves them, so one read can
	// take a whole TLS record.
	minRead     = 512
	compactFree = 16384 + 256
)

// frameBufs is the pool of frame buffers, as pointers so that Get and Put
// do not allocate.
var frameBufs = sync.Pool{New: func() any {
	b := make([]byte, frameBufSize)
	return &b
}}

// frameBufsOut counts the frame buffers taken from frameBufs and not yet
// given back (for tests: an idle channel holds none).
var frameBufsOut atomic.Int64

func getFrameBuf() *[]byte {
	frameBufsOut.Add(1)
	return frameBufs.Get().(*[]byte)
}

// newFrameReader returns a reader over src that starts with the bytes in
// pre (what the HTTP exchange read past the CONNECT answer), copied.
func newFrameReader(src io.Reader, maxPayload int, pre []byte) *frameReader {
	f := &frameReader{src: src, maxPayload: maxPayload}
	if len(pre) > 0 {
		f.buf = getFrameBuf()
		f.w = copy(*f.buf, pre)
	}
	return f
}

// buffered is the number of bytes held beyond the frame last returned.
func (f *frameReader) buffered() int { return f.w - f.r - f.pending }

// ready reports whether Next can return without reading: a whole frame, a
// header Next will refuse, or a read error is buffered.
func (f *frameReader) ready() bool {
	if f.err != nil {
		return true
	}
	if f.buf == nil {
		return false
	}
	b := (*f.buf)[f.r+f.pending : f.w]
	if len(b) < cstp.HeaderLen {
		return false
	}
	_, n, err := cstp.ParseHeader(b)
	return err != nil || n > f.maxPayload || len(b) >= cstp.HeaderLen+n
}

// Next returns the next frame. At a clean end of stream between frames it
// returns io.EOF, inside a frame io.ErrUnexpectedEOF. A malformed header
// (cstp.ErrBadMagic, ErrBadVersion, ErrBadReserved) or a payload over the
// limit (cstp.ErrFrameTooLong) leaves the stream unusable: the caller
// closes the connection.
func (f *frameReader) Next() (cstp.FrameType, []byte, error) {
	f.discard()
	if err := f.fill(cstp.HeaderLen); err != nil {
		return 0, nil, err
	}
	b := (*f.buf)[f.r:f.w]
	t, n, err := cstp.ParseHeader(b)
	if err != nil {
		return 0, nil, err
	}
	if n > f.maxPayload {
		return 0, nil, fmt.Errorf("%w: %s frame of %d bytes, limit %d", cstp.ErrFrameTooLong, t, n, f.maxPayload)
	}
	if err := f.fill(cstp.HeaderLen + n); err != nil {
		return 0, nil, err
	}
	frame := (*f.buf)[f.r : f.r+cstp.HeaderLen+n]
	f.pending = len(frame)
	return t, frame[cstp.HeaderLen:len(frame):len(frame)], nil
}

// discard drops the frame last returned and releases an empty buffer.
func (f *frameReader) discard() {
	f.r += f.pending
	f.pending = 0
	if f.buf != nil && f.r == f.w {
		f.release()
	}
}

// release returns the buffer to the pool.
func (f *frameReader) release() {
	if f.buf != nil {
		frameBufsOut.Add(-1)
		frameBufs.Put(f.buf)
		f.buf, f.r, f.w = nil, 0, 0
	}
}

// fill reads until need bytes from f.r are buffered.
func (f *frameReader) fill(need int) error {
	for f.w-f.r < need {
		if f.err != nil {
			// Returned once: a timeout consumes nothing and Next may be
			// called again; a broken stream fails the next read anyway.
			err := f.err
			f.err = nil
			if f.w > f.r && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if f.w == f.r {
				f.release()
			}
			return err
		}
		if f.buf == nil {
			f.buf = getFrameBuf()
		}
		buf := *f.buf
		if f.r > 0 && (len(buf)-f.w < compactFree || f.r+need > len(buf)) {
			f.w = copy(buf, buf[f.r:f.w])
			f.r = 0
		}
		n, err := f.src.Read(buf[f.w:])
		f.w += n
		if err != nil {
			f.err = err
		}
	}
	return nil
}

// close releases the buffer; the reader must not be used after.
func (f *frameReader) close() { f.release() }

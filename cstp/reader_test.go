package cstp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Reader is the tests' frame reader: vpnd and vpnc read frames with
// session's pooled frameReader, and loadgen parses headers itself.

// Reader reads CSTP frames from a bufio.Reader without allocating or
// copying: Next peeks the header and payload in the bufio buffer and
// discards them on the following call. The payload it returns therefore
// aliases the bufio buffer and is valid only until the next call to Next.
type Reader struct {
	br         *bufio.Reader
	maxPayload int
	pending    int // bytes of the previous frame still to be discarded
}

// NewReader returns a Reader over br accepting payloads of at most
// maxPayload bytes (1..MaxPayload). br must have been created with a size of
// at least HeaderLen+MaxPayload, so that any frame fits in its buffer.
func NewReader(br *bufio.Reader, maxPayload int) (*Reader, error) {
	if br == nil {
		return nil, errors.New("cstp: NewReader: nil bufio.Reader")
	}
	if br.Size() < HeaderLen+MaxPayload {
		return nil, fmt.Errorf("cstp: NewReader: bufio.Reader size %d < %d", br.Size(), HeaderLen+MaxPayload)
	}
	if maxPayload < 1 || maxPayload > MaxPayload {
		return nil, fmt.Errorf("cstp: NewReader: maxPayload %d out of range 1..%d", maxPayload, MaxPayload)
	}
	return &Reader{br: br, maxPayload: maxPayload}, nil
}

// Next returns the next frame. The payload slice is valid until the next
// call to Next (its capacity is clipped, so appending to it copies).
//
// At a clean end of stream between frames Next returns io.EOF; a stream
// ending inside a frame yields io.ErrUnexpectedEOF. A malformed header
// (ErrBadMagic, ErrBadVersion, ErrBadReserved) or a payload longer than the
// limit (ErrFrameTooLong) leaves the stream unusable: there is no way to
// resynchronise, so the caller should close the connection. Other read
// errors (such as a deadline) are returned unchanged and consume nothing, so
// Next may be called again.
func (r *Reader) Next() (FrameType, []byte, error) {
	if r.pending > 0 {
		// Cannot fail: the bytes were peeked, so they are buffered.
		r.br.Discard(r.pending)
		r.pending = 0
	}
	hdr, err := r.br.Peek(HeaderLen)
	if err != nil {
		return 0, nil, eofError(err, len(hdr))
	}
	t, n, err := ParseHeader(hdr)
	if err != nil {
		return 0, nil, err
	}
	if n > r.maxPayload {
		return 0, nil, fmt.Errorf("%w: %s frame of %d bytes, limit %d", ErrFrameTooLong, t, n, r.maxPayload)
	}
	frame, err := r.br.Peek(HeaderLen + n)
	if err != nil {
		return 0, nil, eofError(err, len(frame))
	}
	r.pending = HeaderLen + n
	return t, frame[HeaderLen : HeaderLen+n : HeaderLen+n], nil
}

// eofError maps io.EOF to io.ErrUnexpectedEOF when part of a frame was read.
func eofError(err error, got int) error {
	if err == io.EOF && got > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Buffered returns the number of bytes already buffered beyond the frame
// last returned by Next. When it is zero the next Next call will block on
// the underlying reader, so it is a good moment to flush a batch of output.
func (r *Reader) Buffered() int {
	return r.br.Buffered() - r.pending
}

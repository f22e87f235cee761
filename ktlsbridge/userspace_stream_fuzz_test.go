package ktlsbridge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"kvpn/record"
)

// ktStreamRecord is one record of a sealed test stream: where it lies in
// the stream and the application data it carries (none for others).
type ktStreamRecord struct {
	start, end int
	data       []byte
}

// ktSealStream seals one record per byte of sizes: 255 is a post-handshake
// NewSessionTicket (which Conn.Read skips), anything else application data
// of b*65 bytes (up to the 2^14 limit; 0 is an empty record). With
// closeNotify a close_notify alert ends the stream.
func ktSealStream(t testing.TB, se *Sealer, sizes []byte, closeNotify bool) ([]byte, []ktStreamRecord) {
	var stream []byte
	var recs []ktStreamRecord
	seal := func(typ uint8, p []byte) {
		h := se.Headroom()
		buf := make([]byte, h+len(p)+se.Tailroom())
		copy(buf[h:], p)
		rec, err := se.Seal(buf, h, len(p), record.ContentType(typ))
		if err != nil {
			t.Fatal(err)
		}
		r := ktStreamRecord{start: len(stream), end: len(stream) + len(rec)}
		if typ == contentApplicationData {
			r.data = p
		}
		recs = append(recs, r)
		stream = append(stream, rec...)
	}
	for i, b := range sizes {
		if b == 255 {
			// NewSessionTicket (RFC 8446 section 4.6.1), abridged.
			seal(contentHandshake, []byte{4, 0, 0, 4, 0, 0, 0, byte(i)})
			continue
		}
		seal(contentApplicationData, ktPayload(min(int(b)*65, MaxPlaintext), byte(i)))
	}
	if closeNotify {
		seal(contentAlert, []byte{1, 0})
	}
	return stream, recs
}

// FuzzUserRXStream: the userspace record reader (userRX under Conn.Read)
// given the records a Sealer wrote, cut at arbitrary points by the socket
// and read with arbitrary buffer sizes, returns exactly the application
// data that was sealed, then io.EOF. With the stream damaged (a byte
// flipped, cut short, garbage inserted) it returns a prefix of that data,
// at least every record before the damage, then an error: never a panic,
// never bytes that were not sealed.
func FuzzUserRXStream(f *testing.F) {
	f.Add(uint8(0), []byte{1, 0, 255, 200}, []byte{7, 130, 255}, uint8(0), uint32(0), []byte{})
	f.Add(uint8(3), []byte{10, 20}, []byte{0}, uint8(1), uint32(60), []byte{})
	f.Add(uint8(4), []byte{252, 252, 252}, []byte{250, 2}, uint8(2), uint32(16400), []byte{})
	f.Add(uint8(2), []byte{5}, []byte{}, uint8(3), uint32(0), []byte{23, 3, 3, 0, 0})
	f.Add(uint8(5), []byte{3, 255, 3}, []byte{100}, uint8(4), uint32(0), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, sizes, cuts []byte, op uint8, pos uint32, garbage []byte) {
		if len(sizes) > 48 {
			sizes = sizes[:48]
		}
		kind := ktKinds[int(which)%len(ktKinds)]
		keys := ktTestKeys(kind, which, uint64(which)*1000)
		se, err := NewSealer(keys)
		if err != nil {
			t.Fatal(err)
		}
		stream, recs := ktSealStream(t, se, sizes, op%5 == 4)
		var all []byte
		for _, r := range recs {
			all = append(all, r.data...)
		}
		// What must come back: at least the data of the records that end
		// at or before the damage, and which error.
		minimum := func(end int) []byte {
			var b []byte
			for _, r := range recs {
				if r.end <= end {
					b = append(b, r.data...)
				}
			}
			return b
		}
		want, exact := all, true
		var wantErr error = io.EOF // nil: any error but io.EOF
		switch op % 5 {
		case 1: // flip a byte: the record holding it fails
			if len(stream) == 0 {
				break
			}
			p := int(pos % uint32(len(stream)))
			x := byte(0x80)
			if len(garbage) > 0 && garbage[0] != 0 {
				x = garbage[0]
			}
			stream[p] ^= x
			want, wantErr = minimum(p), nil
		case 2: // cut short: a clean end only between records
			p := int(pos % uint32(len(stream)+1))
			stream = stream[:p]
			want = minimum(p)
			wantErr = io.ErrUnexpectedEOF
			if p == 0 {
				wantErr = io.EOF
			}
			for _, r := range recs {
				if r.end == p {
					wantErr = io.EOF
				}
			}
		case 3: // garbage inserted
			if len(garbage) == 0 {
				break
			}
			p := int(pos % uint32(len(stream)+1))
			stream = append(stream[:p:p], append(bytes.Clone(garbage), stream[p:]...)...)
			// Inserted bytes equal to the ones they push along can leave
			// the record they land in intact: at least the records before.
			want, exact, wantErr = minimum(p), false, nil
		}
		u, err := newUserRX(&ktChunkConn{data: stream, cuts: cuts}, keys)
		if err != nil {
			t.Fatal(err)
		}
		// Alerts about refused records go to a sink.
		tx, err := newUserTX(ktSinkConn{}, keys)
		if err != nil {
			t.Fatal(err)
		}
		c := &Conn{raw: ktSinkConn{}, tx: tx, rx: u}
		var got []byte
		buf := make([]byte, 20000)
		for i := 0; ; i++ {
			if i > 10*len(stream)+1000 {
				t.Fatal("Read makes no progress")
			}
			size := 4096
			if len(cuts) > 0 {
				size = ktCutSize(cuts[i%len(cuts)] ^ 0x5a)
			}
			n, err := c.Read(buf[:size])
			if n > size || (err != nil && n != 0) {
				t.Fatalf("Read(%d bytes) = %d, %v", size, n, err)
			}
			got = append(got, buf[:n]...)
			if !bytes.HasPrefix(all, got) {
				t.Fatalf("after %d bytes, Read returned bytes that were not sealed", len(got))
			}
			if err == nil {
				continue
			}
			switch {
			case wantErr == nil && errors.Is(err, io.EOF):
				t.Fatalf("damaged stream ended cleanly after %d of %d bytes", len(got), len(all))
			case wantErr != nil && !errors.Is(err, wantErr):
				t.Fatalf("error %v, want %v", err, wantErr)
			}
			break
		}
		if exact && !bytes.Equal(got, want) || !exact && !bytes.HasPrefix(got, want) {
			t.Fatalf("read %d bytes, want %d (of %d)", len(got), len(want), len(all))
		}
	})
}

// ktSinkConn takes every write and deadline, and nothing else.
type ktSinkConn struct{ net.Conn }

func (ktSinkConn) Write(p []byte) (int, error)        { return len(p), nil }
func (ktSinkConn) SetWriteDeadline(t time.Time) error { return nil }

package cstp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"kvpn/internal/race"
	"strings"
	"testing"
)

func newTestReader(t testing.TB, stream []byte, maxPayload int) *Reader {
	t.Helper()
	r, err := NewReader(bufio.NewReaderSize(bytes.NewReader(stream), HeaderLen+MaxPayload), maxPayload)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPutHeaderParseHeader(t *testing.T) {
	for _, tc := range []struct {
		t FrameType
		n int
	}{{TypeData, 0}, {TypeData, 1400}, {TypeDPDReq, 3}, {TypeTerminate, MaxPayload}, {FrameType(0xff), 256}} {
		var b [HeaderLen]byte
		PutHeader(b[:], tc.t, tc.n)
		if string(b[:4]) != "STF\x01" || b[7] != 0 || b[6] != byte(tc.t) || int(b[4])<<8|int(b[5]) != tc.n {
			t.Errorf("PutHeader(%v, %d) = % x", tc.t, tc.n, b)
		}
		gt, gn, err := ParseHeader(b[:])
		if err != nil || gt != tc.t || gn != tc.n {
			t.Errorf("ParseHeader(% x) = %v, %d, %v", b, gt, gn, err)
		}
	}
}

func TestPutHeaderPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"short":    func() { PutHeader(make([]byte, 7), TypeData, 0) },
		"too long": func() { PutHeader(make([]byte, 8), TypeData, MaxPayload+1) },
		"negative": func() { PutHeader(make([]byte, 8), TypeData, -1) },
		"append":   func() { AppendFrame(nil, TypeData, make([]byte, MaxPayload+1)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestParseHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		hdr  string
		want error
	}{
		{"STF\x01\x00\x10\x00\x00", nil},
		{"XTF\x01\x00\x10\x00\x00", ErrBadMagic},
		{"stf\x01\x00\x10\x00\x00", ErrBadMagic},
		{"STF\x02\x00\x10\x00\x00", ErrBadVersion},
		{"STF\x01\x00\x10\x00\x01", ErrBadReserved},
		// Magic is checked first, like both stock readers do.
		{"HTTP/1.1", ErrBadMagic},
	} {
		_, _, err := ParseHeader([]byte(tc.hdr))
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("ParseHeader(%q) error = %v, want %v", tc.hdr, err, tc.want)
		}
	}
	if _, _, err := ParseHeader([]byte("STF\x01")); err == nil {
		t.Error("ParseHeader accepted a 4-byte header")
	}
}

func TestFrameTypeString(t *testing.T) {
	for ft, want := range map[FrameType]string{
		TypeData: "DATA", TypeDPDReq: "DPD-REQ", TypeDPDResp: "DPD-RESP", TypeDisconnect: "DISCONNECT",
		TypeKeepalive: "KEEPALIVE", TypeCompressed: "COMPRESSED", TypeTerminate: "TERMINATE", 0x42: "FrameType(0x42)",
	} {
		if got := ft.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint8(ft), got, want)
		}
	}
}

func TestReaderSequence(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, MaxPayload)
	var stream []byte
	stream = AppendFrame(stream, TypeData, []byte("packet one"))
	stream = AppendFrame(stream, TypeKeepalive, nil)
	stream = AppendFrame(stream, TypeDPDReq, []byte{1, 2, 3})
	stream = AppendFrame(stream, TypeData, big)
	stream = AppendFrame(stream, TypeDisconnect, DisconnectPayload("bye"))

	r := newTestReader(t, stream, MaxPayload)
	want := []struct {
		t FrameType
		p []byte
	}{{TypeData, []byte("packet one")}, {TypeKeepalive, nil}, {TypeDPDReq, []byte{1, 2, 3}}, {TypeData, big}, {TypeDisconnect, []byte("\xb0bye")}}
	for i, w := range want {
		ft, p, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ft != w.t || !bytes.Equal(p, w.p) {
			t.Fatalf("frame %d = %v %q, want %v %q", i, ft, p[:min(len(p), 16)], w.t, w.p[:min(len(w.p), 16)])
		}
		if cap(p) != len(p) {
			t.Errorf("frame %d: payload capacity %d not clipped to %d", i, cap(p), len(p))
		}
	}
	for range 2 {
		if _, _, err := r.Next(); err != io.EOF {
			t.Fatalf("after last frame: %v, want io.EOF", err)
		}
	}
}

func TestReaderTruncated(t *testing.T) {
	frame := AppendFrame(nil, TypeData, []byte("0123456789"))
	for cut := 1; cut < len(frame); cut++ {
		r := newTestReader(t, frame[:cut], MaxPayload)
		if _, _, err := r.Next(); err != io.ErrUnexpectedEOF {
			t.Errorf("stream cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	// A complete frame followed by a partial one.
	stream := append(bytes.Clone(frame), frame[:3]...)
	r := newTestReader(t, stream, MaxPayload)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Next(); err != io.ErrUnexpectedEOF {
		t.Errorf("partial second frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReaderMalformed(t *testing.T) {
	good := AppendFrame(nil, TypeData, []byte("ok"))
	for _, tc := range []struct {
		name string
		mod  func(b []byte)
		want error
	}{
		{"bad magic", func(b []byte) { b[0] = 'X' }, ErrBadMagic},
		{"bad version", func(b []byte) { b[3] = 0 }, ErrBadVersion},
		{"reserved byte", func(b []byte) { b[7] = 0x80 }, ErrBadReserved},
	} {
		bad := bytes.Clone(good)
		tc.mod(bad)
		r := newTestReader(t, append(bytes.Clone(good), bad...), MaxPayload)
		if _, _, err := r.Next(); err != nil {
			t.Fatalf("%s: first frame: %v", tc.name, err)
		}
		for range 2 { // the error is sticky: nothing is consumed
			if _, _, err := r.Next(); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
	}
}

func TestReaderTooLong(t *testing.T) {
	stream := AppendFrame(nil, TypeData, make([]byte, 1501))
	r := newTestReader(t, stream, 1500)
	_, p, err := r.Next()
	if !errors.Is(err, ErrFrameTooLong) || p != nil {
		t.Fatalf("Next = %d bytes, %v; want ErrFrameTooLong", len(p), err)
	}
	if !strings.Contains(err.Error(), "1501") {
		t.Errorf("error %q does not name the length", err)
	}
	// At the limit is fine.
	r = newTestReader(t, AppendFrame(nil, TypeData, make([]byte, 1500)), 1500)
	if _, p, err := r.Next(); err != nil || len(p) != 1500 {
		t.Fatalf("frame at limit: %d bytes, %v", len(p), err)
	}
}

func TestNewReaderChecks(t *testing.T) {
	if _, err := NewReader(bufio.NewReader(bytes.NewReader(nil)), MaxPayload); err == nil {
		t.Error("NewReader accepted a 4 KiB bufio.Reader")
	}
	if _, err := NewReader(nil, MaxPayload); err == nil {
		t.Error("NewReader accepted nil")
	}
	br := bufio.NewReaderSize(bytes.NewReader(nil), HeaderLen+MaxPayload)
	for _, m := range []int{0, -1, MaxPayload + 1} {
		if _, err := NewReader(br, m); err == nil {
			t.Errorf("NewReader accepted maxPayload %d", m)
		}
	}
	if _, err := NewReader(br, 1); err != nil {
		t.Error(err)
	}
}

// flakyReader returns a transient error once after handing out part of
// its data, like a read deadline expiring mid-frame.
type flakyReader struct {
	data   []byte
	failAt int
	failed bool
}

var errTransient = errors.New("transient")

func (f *flakyReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, io.EOF
	}
	if !f.failed && f.failAt == 0 {
		f.failed = true
		return 0, errTransient
	}
	n := len(f.data)
	if !f.failed {
		n = min(n, f.failAt)
	}
	n = copy(p, f.data[:n])
	f.data = f.data[n:]
	f.failAt -= n
	return n, nil
}

func TestReaderRetryAfterTransientError(t *testing.T) {
	stream := AppendFrame(nil, TypeData, []byte("first"))
	stream = AppendFrame(stream, TypeData, []byte("second frame"))
	for failAt := 0; failAt < len(stream); failAt++ {
		fr := &flakyReader{data: bytes.Clone(stream), failAt: failAt}
		r, err := NewReader(bufio.NewReaderSize(fr, HeaderLen+MaxPayload), MaxPayload)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			_, p, err := r.Next()
			if err == errTransient {
				continue
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("failAt %d: %v", failAt, err)
			}
			got = append(got, string(p))
		}
		if strings.Join(got, ",") != "first,second frame" {
			t.Errorf("failAt %d: got %q", failAt, got)
		}
	}
}

func TestReaderBuffered(t *testing.T) {
	var stream []byte
	stream = AppendFrame(stream, TypeData, []byte("aaaa"))
	stream = AppendFrame(stream, TypeData, []byte("bb"))
	r := newTestReader(t, stream, MaxPayload)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != HeaderLen+2 {
		t.Errorf("Buffered after first frame = %d, want %d", got, HeaderLen+2)
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != 0 {
		t.Errorf("Buffered after last frame = %d, want 0", got)
	}
}

func TestDisconnectPayload(t *testing.T) {
	p := DisconnectPayload("Client received SIGINT")
	if p[0] != 0xb0 || string(p[1:]) != "Client received SIGINT" {
		t.Errorf("DisconnectPayload = %q", p)
	}
	for payload, want := range map[string]string{
		"\xb0Server request": "Server request",
		"":                   "",
		"\xb0":               "",
		"no marker":          "no marker",
	} {
		if got := DisconnectReason([]byte(payload)); got != want {
			t.Errorf("DisconnectReason(%q) = %q, want %q", payload, got, want)
		}
	}
	if n := len(DisconnectPayload(strings.Repeat("x", 70000))); n != MaxPayload {
		t.Errorf("long reason gave a %d-byte payload", n)
	}
}

// loopReader replays the same stream forever, so that benchmarks and
// allocation tests measure Next alone.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func dataStream(sizes ...int) []byte {
	var stream []byte
	for _, n := range sizes {
		stream = AppendFrame(stream, TypeData, make([]byte, n))
	}
	return stream
}

func TestReaderNextAllocs(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	br := bufio.NewReaderSize(&loopReader{data: dataStream(1400, 60, 1500, 576)}, HeaderLen+MaxPayload)
	r, err := NewReader(br, MaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(10000, func() {
		if ft, _, err := r.Next(); err != nil || ft != TypeData {
			t.Fatal(ft, err)
		}
	})
	if allocs != 0 {
		t.Errorf("Reader.Next allocates %.1f times per DATA frame", allocs)
	}
}

func BenchmarkReaderNext(b *testing.B) {
	const size = 1400
	br := bufio.NewReaderSize(&loopReader{data: dataStream(size, size, size, size)}, HeaderLen+MaxPayload)
	r, err := NewReader(br, MaxPayload)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(HeaderLen + size)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutHeader(b *testing.B) {
	buf := make([]byte, HeaderLen+1400)
	b.ReportAllocs()
	for b.Loop() {
		PutHeader(buf, TypeData, 1400)
	}
}

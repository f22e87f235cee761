package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"kvpn/cstp"
	"kvpn/record/recordtest"
)

// cutReader serves a fixed byte stream (the decrypted TLS stream of a
// tunnel) in chunks of the sizes cuts names in turn, then io.EOF.
type cutReader struct {
	data, cuts []byte
	i          int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.cuts) > 0 {
		// 1..128 bytes, or up to about 17 KB (a TLS record and more).
		b := c.cuts[c.i%len(c.cuts)]
		c.i++
		if b < 128 {
			n = min(n, int(b)+1)
		} else {
			n = min(n, int(b-127)*130)
		}
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

// refEvent is what the reference reader says the channel must do with one
// frame: deliver a packet ("data") or a GSO frame ("gso"), or answer a
// DPD-REQ ("dpd"); ignored frames (DPD-RESP, KEEPALIVE) make none.
type refEvent struct {
	kind    string
	payload []byte
}

// refCSTP reads stream as openconnect and ocserv frame CSTP: 8-byte
// header "STF", version 1, 16-bit length, type, reserved 0, then the
// payload. It returns the events in order and how the stream ends: "eof"
// (clean, between frames), "truncated" (inside a frame), "protocol" (a
// frame kvpn must refuse), or "disconnect"/"terminate" with the reason.
func refCSTP(stream []byte, mtu int, gso bool) (events []refEvent, end, reason string) {
	for pos := 0; ; {
		rest := stream[pos:]
		switch {
		case len(rest) == 0:
			return events, "eof", ""
		case len(rest) < cstp.HeaderLen:
			return events, "truncated", ""
		case string(rest[:3]) != "STF" || rest[3] != 1 || rest[7] != 0:
			return events, "protocol", ""
		}
		n := int(binary.BigEndian.Uint16(rest[4:6]))
		if len(rest) < cstp.HeaderLen+n {
			return events, "truncated", ""
		}
		p := rest[cstp.HeaderLen : cstp.HeaderLen+n]
		pos += cstp.HeaderLen + n
		switch cstp.FrameType(rest[6]) {
		case cstp.TypeData:
			if n > mtu {
				return events, "protocol", ""
			}
			events = append(events, refEvent{"data", p})
		case cstp.TypeGSOData:
			if !gso {
				return events, "protocol", ""
			}
			events = append(events, refEvent{"gso", p})
		case cstp.TypeDPDReq:
			events = append(events, refEvent{"dpd", p})
		case cstp.TypeDPDResp, cstp.TypeKeepalive:
		case cstp.TypeDisconnect, cstp.TypeTerminate:
			end := "disconnect"
			if cstp.FrameType(rest[6]) == cstp.TypeTerminate {
				end = "terminate"
			}
			if len(p) > 0 && p[0] == 0xb0 {
				p = p[1:]
			}
			return events, end, string(p)
		default: // COMPRESSED (never negotiated) and unknown types
			return events, "protocol", ""
		}
	}
}

// FuzzCSTPChannelRead: whatever byte stream arrives as the decrypted TLS
// stream of a tunnel, cut anywhere by the record layer and read in batches
// of any size, the CSTP channel delivers exactly the packets, GSO frames
// and DPD answers the reference reader finds, in order, then ends as the
// reference says (clean end, truncation, protocol error or the peer's
// DISCONNECT/TERMINATE with its reason), and the error stays: it never
// panics and never resynchronises on a broken stream.
func FuzzCSTPChannelRead(f *testing.F) {
	frame := func(t cstp.FrameType, p []byte) []byte { return cstp.AppendFrame(nil, t, p) }
	join := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	ip := append([]byte{0x45}, make([]byte, 27)...)
	f.Add(join(frame(cstp.TypeData, ip), frame(cstp.TypeDPDReq, []byte("dpd")), frame(cstp.TypeData, ip)), []byte{}, uint8(4), uint16(1400), true)
	f.Add(join(frame(cstp.TypeData, ip), frame(cstp.TypeGSOData, make([]byte, 30)), frame(cstp.TypeKeepalive, nil), frame(cstp.TypeDisconnect, []byte{0xb0, 'b', 'y', 'e'})), []byte{3, 0, 200}, uint8(2), uint16(1400), true)
	f.Add(join(frame(cstp.TypeGSOData, ip), frame(cstp.TypeTerminate, nil)), []byte{9}, uint8(1), uint16(1400), false)
	f.Add(join(frame(cstp.TypeData, make([]byte, 1500)), frame(cstp.TypeData, ip)), []byte{255}, uint8(8), uint16(1400), false)
	f.Add(join(frame(cstp.TypeData, ip), []byte("STF\x01\x00\x10\x00")), []byte{}, uint8(3), uint16(576), false)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte{}, uint8(1), uint16(1400), false)
	f.Add(join(frame(cstp.TypeCompressed, ip), frame(0x42, nil)), []byte{1}, uint8(1), uint16(1400), false)
	f.Fuzz(func(t *testing.T, stream, cuts []byte, batch uint8, mtu uint16, gso bool) {
		m := int(mtu)%(9000-576+1) + 576 // server.Config allows 576..9000
		in := &cutReader{data: stream, cuts: cuts}
		var written [][]byte // one per record
		conn := &recordtest.Stream{R: in, Record: func(p []byte) { written = append(written, bytes.Clone(p)) }}
		ch, err := NewCSTPChannel(conn, NewFrameReader(conn), m)
		if err != nil {
			t.Fatal(err)
		}
		var got []refEvent
		if gso {
			ch.AcceptGSO(func(frame []byte) error {
				got = append(got, refEvent{"gso", bytes.Clone(frame)})
				return nil
			})
		}
		const offset = 16
		nb := int(batch)%8 + 1
		bufs, sizes := make([][]byte, nb), make([]int, nb)
		for i := range bufs {
			bufs[i] = make([]byte, offset+m)
		}
		var rerr error
		for calls := 0; ; calls++ {
			if calls > len(stream)+10 {
				t.Fatal("ReadPackets makes no progress")
			}
			n, err := ch.ReadPackets(bufs, sizes, offset)
			if n < 0 || n > nb || (err != nil && n != 0) {
				t.Fatalf("ReadPackets = %d, %v", n, err)
			}
			for i := range n {
				got = append(got, refEvent{"data", bytes.Clone(bufs[i][offset : offset+sizes[i]])})
			}
			if err != nil {
				rerr = err
				break
			}
		}
		if _, again := ch.ReadPackets(bufs, sizes, offset); again != rerr {
			t.Fatalf("error not sticky: %v, then %v", rerr, again)
		}
		// DPD answers go out as they are read; put them in order by
		// reading them with the reference's order of the other events.
		events, end, reason := refCSTP(stream, m, gso)
		var wantDPD [][]byte
		var want []refEvent
		for _, e := range events {
			if e.kind == "dpd" {
				wantDPD = append(wantDPD, cstp.AppendFrame(nil, cstp.TypeDPDResp, e.payload))
				continue
			}
			want = append(want, e)
		}
		if len(got) != len(want) {
			t.Fatalf("%d packets and GSO frames, want %d (end %s, err %v)", len(got), len(want), end, rerr)
		}
		for i := range want {
			if got[i].kind != want[i].kind || !bytes.Equal(got[i].payload, want[i].payload) {
				t.Fatalf("event %d: %s of %d bytes, want %s of %d", i, got[i].kind, len(got[i].payload), want[i].kind, len(want[i].payload))
			}
		}
		if len(written) != len(wantDPD) {
			t.Fatalf("%d frames written, want %d DPD answers", len(written), len(wantDPD))
		}
		for i := range wantDPD {
			if !bytes.Equal(written[i], wantDPD[i]) {
				t.Fatalf("DPD answer %d: % x, want % x", i, written[i], wantDPD[i])
			}
		}
		if got := ch.Stats.RxPackets.Load(); got != uint64(len(want)) {
			t.Fatalf("RxPackets %d, want %d", got, len(want))
		}
		var pe *ProtocolError
		var pc *PeerClosedError
		ok := false
		switch end {
		case "eof":
			ok = rerr == io.EOF
		case "truncated":
			ok = rerr == io.ErrUnexpectedEOF
		case "protocol":
			ok = errors.As(rerr, &pe)
		case "disconnect", "terminate":
			ok = errors.As(rerr, &pc) && pc.Terminate == (end == "terminate") && pc.Reason == reason
		}
		if !ok {
			t.Fatalf("ended with %v, want %s", rerr, fmt.Sprintf("%s %q", end, reason))
		}
	})
}

package udp

import (
	"bytes"
	"encoding/binary"
	"kvpn/internal/testenv"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestGROCoalescesGSOSend sends a GSO run over loopback to a socket with
// UDP_GRO on: the run arrives as coalesced datagrams whose SegmentSize
// splits them back into the datagrams sent, in order and intact.
func TestGROCoalescesGSOSend(t *testing.T) {
	rc, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if !rc.EnableGRO() {
		testenv.Unavailable(t, "UDP_GRO (KVPN_UDP_NO_GRO=1 or an old kernel)", nil)
	}
	sc, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dst := rc.LocalAddr().(*net.UDPAddr)
	sizes := []int{1200, 1200, 1200, 1200, 1200, 700, 1200, 1200, 90}
	msgs := make([]Message, len(sizes))
	for i, n := range sizes {
		msgs[i] = Message{Buffers: [][]byte{bytes.Repeat([]byte{byte(i + 1)}, n)}, Addr: dst}
	}
	if err := sc.WriteBatch(msgs); err != nil {
		t.Fatal(err)
	}
	rmsgs := make([]Message, 8)
	for i := range rmsgs {
		rmsgs[i].Buffers = [][]byte{make([]byte, 65536)}
		rmsgs[i].OOB = make([]byte, OOBSize)
	}
	var got [][]byte
	coalesced := 0
	for len(got) < len(sizes) {
		rc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := rc.ReadBatch(rmsgs)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, m := range rmsgs[:n] {
			dg := m.Buffers[0][:m.N]
			seg := SegmentSize(&m)
			if seg == 0 {
				got = append(got, dg)
				continue
			}
			coalesced++
			for len(dg) > 0 {
				k := min(seg, len(dg))
				got = append(got, dg[:k])
				dg = dg[k:]
			}
		}
	}
	if len(got) != len(sizes) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(sizes))
	}
	for i, g := range got {
		if len(g) != sizes[i] || g[0] != byte(i+1) || g[len(g)-1] != byte(i+1) {
			t.Errorf("datagram %d: %d bytes of %d, want %d of %d", i, len(g), g[0], sizes[i], i+1)
		}
	}
	if coalesced == 0 {
		t.Errorf("no datagram arrived coalesced: GRO did not take effect on loopback")
	}
}

func groCmsg(size uint32) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafePointer(b))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], size)
	return b
}

func TestSegmentSize(t *testing.T) {
	other := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafePointer(other))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_TIMESTAMP
	h.SetLen(unix.CmsgLen(4))
	for _, tc := range []struct {
		name string
		oob  []byte
		n    int
		want int
	}{
		{"none", nil, 3000, 0},
		{"gro", groCmsg(1000), 3000, 1000},
		{"after another cmsg", append(append([]byte{}, other...), groCmsg(1000)...), 2500, 1000},
		{"segment not smaller than datagram", groCmsg(3000), 3000, 0},
		{"zero", groCmsg(0), 3000, 0},
		{"truncated", groCmsg(1000)[:unix.CmsgLen(2)], 3000, 0},
	} {
		m := Message{OOB: tc.oob, NN: len(tc.oob), N: tc.n}
		if got := SegmentSize(&m); got != tc.want {
			t.Errorf("%s: SegmentSize = %d, want %d", tc.name, got, tc.want)
		}
	}
	m := Message{OOB: groCmsg(1000), N: 3000}
	m.NN = len(m.OOB)
	if a := testing.AllocsPerRun(100, func() { SegmentSize(&m) }); a != 0 {
		t.Errorf("SegmentSize allocates %v per call", a)
	}
}

// FuzzSegmentSize: control messages are kernel output, but the parser
// must not read out of bounds whatever they hold.
func FuzzSegmentSize(f *testing.F) {
	f.Add(groCmsg(1400), 5000)
	f.Add([]byte{}, 10)
	f.Fuzz(func(t *testing.T, oob []byte, n int) {
		m := Message{OOB: oob, NN: len(oob), N: n}
		if s := SegmentSize(&m); s < 0 || (s > 0 && s >= n) {
			t.Fatalf("SegmentSize = %d for N %d", s, n)
		}
	})
}

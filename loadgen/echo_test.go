package loadgen

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// reply turns an echo request into the reply a kernel sends.
func reply(req []byte) []byte {
	r := append([]byte(nil), req...)
	copy(r[12:16], req[16:20])
	copy(r[16:20], req[12:16])
	r[10], r[11] = 0, 0
	binary.BigEndian.PutUint16(r[10:12], checksum(r[:20]))
	icmp := r[20:]
	icmp[0] = icmpEchoReply
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return r
}

func TestEchoRoundTrip(t *testing.T) {
	pkt := make([]byte, 100)
	src, dst := netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("10.1.0.1")
	putEchoRequest(pkt, src, dst, 77, 3, 123456789)
	if checksum(pkt[:20]) != 0 || checksum(pkt[20:]) != 0 {
		t.Fatal("checksums do not verify")
	}
	if _, _, ok := parseEchoReply(pkt); ok {
		t.Fatal("a request parsed as a reply")
	}
	id, stamp, ok := parseEchoReply(reply(pkt))
	if !ok || id != 77 || stamp != 123456789 {
		t.Fatalf("got id %d stamp %d ok %v", id, stamp, ok)
	}
	if _, _, ok := parseEchoReply(reply(pkt)[:40]); ok {
		t.Fatal("truncated packet parsed")
	}
}

func TestServerTunnelAddr(t *testing.T) {
	got := serverTunnelAddr(netip.MustParseAddr("192.168.77.45"), netip.MustParseAddr("255.255.255.0"))
	if got != netip.MustParseAddr("192.168.77.1") {
		t.Fatalf("got %s", got)
	}
}

func TestEchoAllocs(t *testing.T) {
	pkt := make([]byte, 100)
	src, dst := netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("10.1.0.1")
	r := reply(pkt)
	if n := testing.AllocsPerRun(100, func() {
		putEchoRequest(pkt, src, dst, 1, 2, 3)
		parseEchoReply(r)
	}); n != 0 {
		t.Fatalf("%.0f allocations per packet", n)
	}
}

func FuzzParseEchoReply(f *testing.F) {
	pkt := make([]byte, 64)
	putEchoRequest(pkt, netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1"), 1, 1, 1)
	f.Add(reply(pkt))
	f.Add([]byte{0x4f})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseEchoReply(b)
	})
}

// TestReceivedAllocs: accounting for a packet from the server (the
// generator's per-packet receive path) allocates nothing.
func TestReceivedAllocs(t *testing.T) {
	s := &sess{r: &runner{stats: &Stats{}}, id: 5}
	pkt := make([]byte, 100)
	putEchoRequest(pkt, netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("10.1.0.1"), s.echoID(), 1, 1)
	r := reply(pkt)
	if n := testing.AllocsPerRun(100, func() { s.received(r) }); n != 0 {
		t.Fatalf("%.0f allocations per packet", n)
	}
	if s.r.stats.EchoReplies.Load() == 0 {
		t.Fatal("reply not counted")
	}
}

package loadgen

import (
	"encoding/binary"
	"net/netip"
)

// ICMP echo over IPv4 (RFC 792, RFC 791). The generator's packets go from
// the session's tunnel address to the server's own tunnel address, so the
// server host's kernel answers them: round-trip traffic with no other host.
const (
	ipv4HeaderLen  = 20
	icmpHeaderLen  = 8
	echoStampLen   = 8 // send time, unix nanoseconds, first in the payload
	minEchoPacket  = ipv4HeaderLen + icmpHeaderLen + echoStampLen
	protoICMP      = 1
	icmpEchoReply  = 0
	icmpEchoRequst = 8
	echoTTL        = 64
)

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// putEchoRequest writes an IPv4 ICMP echo request of len(pkt) bytes
// (at least minEchoPacket) from src to dst into pkt. The payload starts
// with stamp; the rest is left as it is (zeroes in a fresh buffer).
func putEchoRequest(pkt []byte, src, dst netip.Addr, id, seq uint16, stamp int64) {
	ip := pkt[:ipv4HeaderLen]
	ip[0] = 0x45 // version 4, 5 words
	ip[1] = 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(pkt)))
	binary.BigEndian.PutUint16(ip[4:6], seq)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = echoTTL
	ip[9] = protoICMP
	ip[10], ip[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	icmp := pkt[ipv4HeaderLen:]
	icmp[0] = icmpEchoRequst
	icmp[1] = 0
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	binary.BigEndian.PutUint64(icmp[8:16], uint64(stamp))
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
}

// parseEchoReply reports whether pkt is an IPv4 ICMP echo reply and
// returns its identifier and the send time from its payload. pkt comes
// from the server: anything else, short or malformed, is not a reply.
func parseEchoReply(pkt []byte) (id uint16, stamp int64, ok bool) {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return 0, 0, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < ipv4HeaderLen || total > len(pkt) || total < ihl+icmpHeaderLen+echoStampLen || pkt[9] != protoICMP {
		return 0, 0, false
	}
	// A fragment's payload is not a whole ICMP message.
	if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
		return 0, 0, false
	}
	icmp := pkt[ihl:total]
	if icmp[0] != icmpEchoReply || icmp[1] != 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(icmp[4:6]), int64(binary.BigEndian.Uint64(icmp[8:16])), true
}

// serverTunnelAddr is the address vpnd and ocserv give their own end of
// the tunnel: the first host of the network the client's address and
// netmask describe (vpnd's pool gateway; ocserv's ip-lease.c takes
// network + 1 as the local address).
func serverTunnelAddr(addr, mask netip.Addr) netip.Addr {
	if !addr.Is4() || !mask.Is4() {
		return netip.Addr{}
	}
	a, m := addr.As4(), mask.As4()
	for i := range a {
		a[i] &= m[i]
	}
	a[3]++
	return netip.AddrFrom4(a)
}

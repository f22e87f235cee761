package tun_test

import (
	"encoding/binary"
	"net/netip"
)

// Minimal IPv4/UDP/TCP builders and a parser for the device tests.

const (
	protoTCP = 6
	protoUDP = 17

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpPSH = 0x08
	tcpACK = 0x10
)

// checksum is the Internet checksum (RFC 1071) of b, folded onto sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
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

// pseudoSum is the sum of the IPv4 pseudo-header for an L4 checksum.
func pseudoSum(src, dst netip.Addr, proto byte, l4len int) uint32 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	for _, w := range [][]byte{s[:], d[:]} {
		sum += uint32(binary.BigEndian.Uint16(w)) + uint32(binary.BigEndian.Uint16(w[2:]))
	}
	return sum + uint32(proto) + uint32(l4len)
}

// ipv4Packet wraps l4 (with a zero checksum field at csumAt) in an IPv4
// header and fills both checksums.
func ipv4Packet(src, dst netip.Addr, proto byte, l4 []byte, csumAt int) []byte {
	p := make([]byte, 20+len(l4))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = proto
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
	copy(p[20:], l4)
	binary.BigEndian.PutUint16(p[20+csumAt:], checksum(p[20:], pseudoSum(src, dst, proto, len(l4))))
	return p
}

func udpPacket(src, dst netip.AddrPort, data []byte) []byte {
	l4 := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	copy(l4[8:], data)
	return ipv4Packet(src.Addr(), dst.Addr(), protoUDP, l4, 6)
}

// tcpPacket builds a segment; on SYNs it adds an MSS option.
func tcpPacket(src, dst netip.AddrPort, seq, ack uint32, flags byte, mss uint16, data []byte) []byte {
	hlen := 20
	if flags&tcpSYN != 0 {
		hlen = 24
	}
	l4 := make([]byte, hlen+len(data))
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ack)
	l4[12] = byte(hlen/4) << 4
	l4[13] = flags
	binary.BigEndian.PutUint16(l4[14:], 65535) // window, no scaling
	if hlen == 24 {
		l4[20], l4[21] = 2, 4 // MSS option
		binary.BigEndian.PutUint16(l4[22:], mss)
	}
	copy(l4[hlen:], data)
	return ipv4Packet(src.Addr(), dst.Addr(), protoTCP, l4, 16)
}

type parsed struct {
	proto    byte
	src, dst netip.AddrPort
	seq, ack uint32
	flags    byte
	payload  []byte
	csumOK   bool // IPv4 header and L4 checksums verify
}

// parse decodes an IPv4 UDP or TCP packet; ok is false for anything else
// (the kernel also sends IPv6 router solicitations and MLD reports).
func parse(p []byte) (q parsed, ok bool) {
	if len(p) < 20 || p[0] != 0x45 || int(binary.BigEndian.Uint16(p[2:])) != len(p) {
		return q, false
	}
	q.proto = p[9]
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	l4 := p[20:]
	q.csumOK = checksum(p[:20], 0) == 0 && checksum(l4, pseudoSum(src, dst, q.proto, len(l4))) == 0
	switch {
	case q.proto == protoUDP && len(l4) >= 8:
		q.payload = l4[8:]
	case q.proto == protoTCP && len(l4) >= 20 && int(l4[12]>>4)*4 <= len(l4):
		q.seq = binary.BigEndian.Uint32(l4[4:])
		q.ack = binary.BigEndian.Uint32(l4[8:])
		q.flags = l4[13]
		q.payload = l4[int(l4[12]>>4)*4:]
	default:
		return q, false
	}
	q.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	q.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return q, true
}

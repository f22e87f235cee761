// Package ippkt reads the few IP header fields the data path needs (version,
// source, destination) from packets of untrusted origin, without allocating.
package ippkt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

const (
	ipv4MinHeader = 20 // RFC 791
	ipv6Header    = 40 // RFC 8200
)

// ErrNotIP is returned for a packet that is not a well-formed IPv4 or IPv6
// packet.
var ErrNotIP = errors.New("not an IP packet")

// Addrs returns the source and destination of an IPv4 or IPv6 packet after
// checking that its header is complete and its length field agrees with
// the packet (a TUN device and CSTP both carry exactly one packet).
func Addrs(pkt []byte) (src, dst netip.Addr, err error) {
	if len(pkt) == 0 {
		return src, dst, fmt.Errorf("%w: empty", ErrNotIP)
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4MinHeader {
			return src, dst, fmt.Errorf("%w: %d-byte IPv4 packet is shorter than its header", ErrNotIP, len(pkt))
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < ipv4MinHeader || total < ihl || total > len(pkt) {
			return src, dst, fmt.Errorf("%w: IPv4 header length %d / total length %d do not fit %d bytes", ErrNotIP, ihl, total, len(pkt))
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), nil
	case 6:
		if len(pkt) < ipv6Header {
			return src, dst, fmt.Errorf("%w: %d-byte IPv6 packet is shorter than its header", ErrNotIP, len(pkt))
		}
		payload := int(binary.BigEndian.Uint16(pkt[4:6]))
		if ipv6Header+payload > len(pkt) {
			return src, dst, fmt.Errorf("%w: IPv6 payload length %d exceeds %d bytes", ErrNotIP, payload, len(pkt))
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), nil
	default:
		return src, dst, fmt.Errorf("%w: IP version %d", ErrNotIP, pkt[0]>>4)
	}
}

package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Reading frames and cutting them into packets. The offload backend reads
// the TUN fd itself (rather than through wireguard's Read, one frame per
// call) so that it can go on reading the frames already queued without
// blocking: a flood of small packets, which the kernel cannot coalesce,
// then leaves in batches instead of one packet per read and send.

// errNoRoom is splitFrame's answer when a super-packet has more segments
// than the buffers left; the caller keeps the frame for its next call.
var errNoRoom = errors.New("tun: frame has more segments than buffers")

// errBadFrame wraps every reason splitFrame refuses a frame from the kernel.
var errBadFrame = errors.New("tun: bad frame from the kernel")

// TCP flags splitFrame adjusts (RFC 9293 section 3.1; RFC 3168 for CWR).
const (
	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
)

// splitFrame turns one frame read from the TUN (a virtio_net_hdr and an IP
// packet) into packets at bufs[i][offset:offset+sizes[i]] and returns how
// many. A frame without GSO is one packet, its transport checksum completed
// when the kernel left it partial (VIRTIO_NET_HDR_F_NEEDS_CSUM: the field
// holds the pseudo-header sum, to be finished over csum_start..end). A
// TSO/USO super-packet is cut the way the kernel's GSO would cut it
// (tcp_gso_segment, __udp_gso_segment): gso_size payload bytes per segment,
// each with the headers copied, the IPv4 ID incremented, lengths, TCP
// sequence numbers and all checksums redone; FIN and PSH only on the last
// segment, CWR only on the first. It writes nothing and returns errNoRoom
// when bufs are too few for the segments.
func splitFrame(frame []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(frame) < VirtioHdrLen+20 {
		return 0, fmt.Errorf("%w: %d bytes", errBadFrame, len(frame))
	}
	if len(bufs) == 0 {
		return 0, errNoRoom
	}
	flags, gsoType, gsoSize, csumStart, csumOffset := decodeVirtioHdr(frame)
	pkt := frame[VirtioHdrLen:]
	if gsoType == gsoNone {
		if flags&virtioFlagNeedsCsum != 0 {
			at := csumStart + csumOffset
			if at+2 > len(pkt) || csumStart > at {
				return 0, fmt.Errorf("%w: checksum at %d+%d of %d bytes", errBadFrame, csumStart, csumOffset, len(pkt))
			}
			partial := binary.BigEndian.Uint16(pkt[at:])
			pkt[at], pkt[at+1] = 0, 0
			binary.BigEndian.PutUint16(pkt[at:], ^fold(sum(pkt[csumStart:], uint64(partial))))
		}
		if len(pkt) > len(bufs[0])-offset {
			return 0, fmt.Errorf("%w: %d-byte packet, %d-byte buffer", errBadFrame, len(pkt), len(bufs[0])-offset)
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, nil
	}

	v4 := pkt[0]>>4 == 4
	var proto byte
	switch {
	case gsoType == gsoTCPv4 && v4, gsoType == gsoTCPv6 && !v4 && pkt[0]>>4 == 6:
		proto = 6
	case gsoType == gsoUDPL4 && (v4 || pkt[0]>>4 == 6):
		proto = 17
	default:
		return 0, fmt.Errorf("%w: GSO type %d for IP version %d", errBadFrame, frame[1], pkt[0]>>4)
	}
	// csum_start is where the transport header begins (the IP header and
	// any IPv6 extension headers before it): the kernel sets it from
	// skb_checksum_start_offset for every GSO packet it hands out.
	// IPv4's header checksum covers exactly IHL words, so there it must be
	// where the transport header starts.
	ipLen := csumStart
	if ipLen < 40 && !v4 || v4 && ipLen != int(pkt[0]&0x0f)*4 || ipLen < 20 || ipLen+20 > len(pkt) {
		return 0, fmt.Errorf("%w: transport header at %d of %d bytes", errBadFrame, ipLen, len(pkt))
	}
	l4Len := 8
	if proto == 6 {
		l4Len = int(pkt[ipLen+12]>>4) * 4
		if l4Len < 20 {
			return 0, fmt.Errorf("%w: TCP header length %d", errBadFrame, l4Len)
		}
	}
	hdrLen := ipLen + l4Len
	if hdrLen > len(pkt) || gsoSize == 0 {
		return 0, fmt.Errorf("%w: headers %d, gso_size %d, %d bytes", errBadFrame, hdrLen, gsoSize, len(pkt))
	}
	payload := len(pkt) - hdrLen
	segs := (payload + gsoSize - 1) / gsoSize
	if segs == 0 {
		segs = 1 // headers only: one packet as it is
	}
	if segs > len(bufs) {
		return 0, errNoRoom
	}
	if hdrLen+min(gsoSize, payload) > len(bufs[0])-offset {
		return 0, fmt.Errorf("%w: %d-byte segments, %d-byte buffers", errBadFrame, hdrLen+gsoSize, len(bufs[0])-offset)
	}

	// The pseudo-header (RFC 9293 3.1, RFC 8200 8.1) without its length,
	// which differs per segment.
	var pseudo uint64
	if v4 {
		pseudo = sum(pkt[12:20], 0)
	} else {
		pseudo = sum(pkt[8:40], 0)
	}
	pseudo += uint64(proto)
	seq := uint32(0)
	if proto == 6 {
		seq = binary.BigEndian.Uint32(pkt[ipLen+4:])
	}
	id := binary.BigEndian.Uint16(pkt[4:])
	for i := range segs {
		start := hdrLen + i*gsoSize
		end := min(start+gsoSize, len(pkt))
		out := bufs[i][offset:]
		n := copy(out, pkt[:hdrLen])
		n += copy(out[n:], pkt[start:end])
		out = out[:n]
		sizes[i] = n
		if v4 {
			binary.BigEndian.PutUint16(out[2:], uint16(n))
			binary.BigEndian.PutUint16(out[4:], id+uint16(i))
			out[10], out[11] = 0, 0
			binary.BigEndian.PutUint16(out[10:], ^fold(sum(out[:ipLen], 0)))
		} else {
			binary.BigEndian.PutUint16(out[4:], uint16(n-40))
		}
		l4 := out[ipLen:]
		if proto == 6 {
			binary.BigEndian.PutUint32(l4[4:], seq+uint32(i*gsoSize))
			if i < segs-1 {
				l4[13] &^= tcpFlagFIN | tcpFlagPSH
			}
			if i > 0 {
				l4[13] &^= tcpFlagCWR
			}
			l4[16], l4[17] = 0, 0
			binary.BigEndian.PutUint16(l4[16:], ^fold(sum(l4, pseudo+uint64(len(l4)))))
		} else {
			binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
			l4[6], l4[7] = 0, 0
			c := ^fold(sum(l4, pseudo+uint64(len(l4))))
			if c == 0 {
				c = 0xffff // RFC 768: a computed zero is sent as all ones
			}
			binary.BigEndian.PutUint16(l4[6:], c)
		}
	}
	return segs, nil
}

// sum adds b to acc as big-endian 16-bit words, the Internet checksum's
// one's-complement sum before folding (RFC 1071), eight bytes at a time.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v>>48 + v>>32&0xffff + v>>16&0xffff + v&0xffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces a one's-complement sum to 16 bits.
func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

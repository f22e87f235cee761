package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A GSO frame is what a TUN opened with IFF_VNET_HDR reads and writes: a
// struct virtio_net_hdr (include/uapi/linux/virtio_net.h) followed by an IP
// packet that may be a TSO/USO super-packet of many segments. kvpn carries
// whole frames between two kvpn peers over TLS (the cstp-gso extension,
// docs/protocol.md), so a 64 KiB TCP burst crosses the tunnel as one frame
// and is written to the far TUN in one write.

// VirtioHdrLen is sizeof(struct virtio_net_hdr).
const VirtioHdrLen = virtioNetHdrLen

// GSOMaxSize is the largest super-packet kvpn lets the kernel build on its
// TUN devices (IFLA_GSO_MAX_SIZE): a GSO frame (header included) must fit
// the 16-bit CSTP length field.
const GSOMaxSize = 64000

// virtio_net_hdr values.
const (
	virtioFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	gsoNone             = 0 // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4            = 1
	gsoTCPv6            = 4
	gsoUDPL4            = 5
	gsoECN              = 0x80
)

// VirtioDevice is a Device that also reads and writes whole GSO frames
// (the offload backend).
type VirtioDevice interface {
	Device
	// ReadGSOBatch blocks until a frame arrives, reads it into bufs[0],
	// and then the frames already queued, without blocking, into the
	// rest; frame i is bufs[i][:sizes[i]].
	ReadGSOBatch(bufs [][]byte, sizes []int) (int, error)
	// WriteGSO writes one frame (checked with CheckGSOFrame first).
	WriteGSO(frame []byte) error
	// ReadTaking is Read, except that each TSO/USO super-packet is first
	// offered whole to take (the virtio-net header and packet, valid only
	// during the call). When take returns true it has used the frame
	// (copied it), which is not split, and the call returns 0 packets.
	// Frames are offered in the order read and never behind packets of
	// the same call, so a caller that queues taken frames where it queues
	// packets keeps the device's order. vpnd sends super-packets whole to
	// kvpn clients this way (cstp-gso-down).
	ReadTaking(bufs [][]byte, sizes []int, offset int, take func(frame []byte) bool) (int, error)
}

// isSuperPacket reports whether a frame read from the kernel is a TSO/USO
// super-packet (a GSO type set), as opposed to a single packet.
func isSuperPacket(frame []byte) bool {
	return len(frame) >= VirtioHdrLen && frame[1]&^gsoECN != gsoNone
}

// GSOSegments returns how many packets a frame stands for, once
// CheckGSOFrame has accepted it (it sets the header length the count
// needs): 1 without GSO, else the payload in gso_size pieces.
func GSOSegments(frame []byte) int {
	_, gsoType, gsoSize, _, _ := decodeVirtioHdr(frame)
	hdrs := int(binary.LittleEndian.Uint16(frame[2:]))
	payload := len(frame) - VirtioHdrLen - hdrs
	if gsoType == gsoNone || gsoSize == 0 || payload <= 0 {
		return 1
	}
	return (payload + gsoSize - 1) / gsoSize
}

// decodeVirtioHdr reads the fields of a frame's struct virtio_net_hdr
// (at least VirtioHdrLen bytes; little-endian, as the kernel writes it on
// the little-endian machines kvpn runs on), the ECN bit masked off the GSO
// type.
func decodeVirtioHdr(frame []byte) (flags, gsoType byte, gsoSize, csumStart, csumOffset int) {
	return frame[0], frame[1] &^ gsoECN, int(binary.LittleEndian.Uint16(frame[4:])),
		int(binary.LittleEndian.Uint16(frame[6:])), int(binary.LittleEndian.Uint16(frame[8:]))
}

// ErrBadGSOFrame wraps every reason CheckGSOFrame refuses a frame.
var ErrBadGSOFrame = errors.New("tun: bad GSO frame")

// CheckGSOFrame validates a frame from an untrusted peer before it goes to
// the kernel: a known GSO type that matches the IP version and transport,
// checksum offsets inside the packet's transport header, and segments
// (headers plus gso_size) no larger than mtu. It returns the IP packet.
// The kernel checks the header too (virtio_net_hdr_to_skb), but kvpn's
// MTU and anti-spoofing policy need the packet it describes anyway.
func CheckGSOFrame(frame []byte, mtu int) ([]byte, error) {
	bad := func(format string, a ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrBadGSOFrame}, a...)...)
	}
	if len(frame) < VirtioHdrLen+20 {
		return bad("%d bytes", len(frame))
	}
	flags, gsoType, gsoSize, csumStart, csumOffset := decodeVirtioHdr(frame)
	pkt := frame[VirtioHdrLen:]
	if flags&^virtioFlagNeedsCsum != 0 {
		return bad("flags 0x%02x", flags)
	}
	var ipLen, proto int
	switch pkt[0] >> 4 {
	case 4:
		ipLen = int(pkt[0]&0x0f) * 4
		proto = int(pkt[9])
		if ipLen < 20 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return bad("IPv4 header length %d, total length %d of %d bytes", ipLen, binary.BigEndian.Uint16(pkt[2:]), len(pkt))
		}
	case 6:
		if len(pkt) < 40 || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return bad("IPv6 payload length does not match %d bytes", len(pkt))
		}
		ipLen, proto = 40, int(pkt[6])
	default:
		return bad("IP version %d", pkt[0]>>4)
	}
	l4Len := 0
	switch proto {
	case 6: // TCP
		if len(pkt) < ipLen+20 {
			return bad("short TCP header")
		}
		l4Len = int(pkt[ipLen+12]>>4) * 4
	case 17: // UDP
		l4Len = 8
	}
	if l4Len < 8 || len(pkt) < ipLen+l4Len {
		if gsoType != gsoNone || flags != 0 {
			return bad("offload for a packet that is not TCP or UDP over plain IP")
		}
		if len(pkt) > mtu {
			return bad("%d-byte packet exceeds the MTU %d", len(pkt), mtu)
		}
		return pkt, nil
	}
	if flags&virtioFlagNeedsCsum != 0 {
		want := 16 // TCP checksum offset
		if proto == 17 {
			want = 6
		}
		if csumStart != ipLen || csumOffset != want {
			return bad("checksum at %d+%d, want %d+%d", csumStart, csumOffset, ipLen, want)
		}
	}
	hdrs := ipLen + l4Len
	// The kernel takes hdr_len as a hint of how much to copy into the
	// linear part; make it the real header length (it reports its own
	// linear length on read, which may be more).
	binary.LittleEndian.PutUint16(frame[2:], uint16(hdrs))
	switch gsoType {
	case gsoNone:
		if len(pkt) > mtu {
			return bad("%d-byte packet exceeds the MTU %d", len(pkt), mtu)
		}
		return pkt, nil
	case gsoTCPv4, gsoTCPv6:
		if proto != 6 || (gsoType == gsoTCPv4) != (pkt[0]>>4 == 4) {
			return bad("GSO type %d for IPv%d protocol %d", gsoType, pkt[0]>>4, proto)
		}
	case gsoUDPL4:
		if proto != 17 {
			return bad("UDP GSO for protocol %d", proto)
		}
	default:
		return bad("GSO type %d", frame[1])
	}
	if flags&virtioFlagNeedsCsum == 0 {
		return bad("GSO without checksum offload")
	}
	if gsoSize == 0 || hdrs+gsoSize > mtu {
		return bad("segments of %d+%d bytes for the MTU %d", hdrs, gsoSize, mtu)
	}
	return pkt, nil
}

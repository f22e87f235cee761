// Package cstp implements the OpenConnect wire protocol carried over TLS: the
// XML login exchange, the CONNECT tunnel request and its X-CSTP/X-DTLS
// headers, and CSTP framing.
package cstp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the size of a CSTP frame header.
const HeaderLen = 8

// MaxPayload is the largest payload the 16-bit length field can describe.
const MaxPayload = 0xffff

// FrameType is the packet type in byte 6 of a CSTP header. The same codes
// are used as the first byte of a DTLS record payload.
type FrameType uint8

// Frame types, as numbered by openconnect (openconnect-internal.h AC_PKT_*)
// and ocserv (AC_PKT_*).
const (
	TypeData       FrameType = 0x00
	TypeDPDReq     FrameType = 0x03
	TypeDPDResp    FrameType = 0x04
	TypeDisconnect FrameType = 0x05
	TypeKeepalive  FrameType = 0x07
	TypeCompressed FrameType = 0x08
	TypeTerminate  FrameType = 0x09
	// TypeGSOData is kvpn's own (cstp-gso extension, only between two
	// kvpn peers): the payload is a struct virtio_net_hdr followed by an
	// IP packet that may be a TSO super-packet. Cisco's codes stop at 9.
	TypeGSOData FrameType = 0x20
)

func (t FrameType) String() string {
	switch t {
	case TypeData:
		return "DATA"
	case TypeDPDReq:
		return "DPD-REQ"
	case TypeDPDResp:
		return "DPD-RESP"
	case TypeDisconnect:
		return "DISCONNECT"
	case TypeKeepalive:
		return "KEEPALIVE"
	case TypeCompressed:
		return "COMPRESSED"
	case TypeTerminate:
		return "TERMINATE"
	case TypeGSOData:
		return "GSO-DATA"
	}
	return fmt.Sprintf("FrameType(0x%02x)", uint8(t))
}

// Header validation errors. ParseHeader and Reader.Next wrap them with the
// offending bytes; test with errors.Is.
var (
	ErrBadMagic     = errors.New("cstp: bad frame magic")
	ErrBadVersion   = errors.New("cstp: bad frame version")
	ErrBadReserved  = errors.New("cstp: non-zero reserved header byte")
	ErrFrameTooLong = errors.New("cstp: frame too long")
)

// PutHeader writes the 8-byte header for a frame of type t carrying n
// payload bytes into b[:HeaderLen]. It panics if b is too short or n is
// outside 0..MaxPayload: both are programming errors.
func PutHeader(b []byte, t FrameType, n int) {
	if len(b) < HeaderLen {
		panic("cstp: PutHeader: buffer shorter than HeaderLen")
	}
	if n < 0 || n > MaxPayload {
		panic(fmt.Sprintf("cstp: PutHeader: payload length %d out of range", n))
	}
	b[0], b[1], b[2], b[3] = 'S', 'T', 'F', 1
	binary.BigEndian.PutUint16(b[4:6], uint16(n))
	b[6] = byte(t)
	// Both stock readers (openconnect cstp_mainloop, ocserv parse_cstp_data)
	// reject a frame whose last header byte is not zero.
	b[7] = 0
}

// ParseHeader validates an 8-byte CSTP header and returns the frame type and
// payload length. It checks the same bytes the stock implementations check:
// magic "STF", version 1 and a zero reserved byte. The type is not checked;
// callers decide what to do with unknown types.
func ParseHeader(b []byte) (t FrameType, n int, err error) {
	if len(b) < HeaderLen {
		return 0, 0, fmt.Errorf("cstp: short header (%d bytes)", len(b))
	}
	if b[0] != 'S' || b[1] != 'T' || b[2] != 'F' {
		return 0, 0, fmt.Errorf("%w: % x", ErrBadMagic, b[:3])
	}
	if b[3] != 1 {
		return 0, 0, fmt.Errorf("%w: %d", ErrBadVersion, b[3])
	}
	if b[7] != 0 {
		return 0, 0, fmt.Errorf("%w: 0x%02x", ErrBadReserved, b[7])
	}
	return FrameType(b[6]), int(binary.BigEndian.Uint16(b[4:6])), nil
}

// AppendFrame appends a complete frame (header and payload) to dst. It is
// meant for control frames; the data path should reserve HeaderLen bytes in
// front of the packet and use PutHeader. It panics if the payload is longer
// than MaxPayload.
func AppendFrame(dst []byte, t FrameType, payload []byte) []byte {
	var hdr [HeaderLen]byte
	PutHeader(hdr[:], t, len(payload))
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// disconnectMarker is the first byte of the DISCONNECT payload openconnect
// sends (cstp_bye). ocserv treats a DISCONNECT starting with it as an
// explicit user logout, an empty one as a temporary disconnect, and any
// other non-empty payload as a protocol error (worker-vpn.c parse_data).
const disconnectMarker = 0xb0

// DisconnectPayload builds a DISCONNECT payload the way openconnect does:
// 0xb0 followed by the ASCII reason. The reason is truncated to fit.
func DisconnectPayload(reason string) []byte {
	if len(reason) > MaxPayload-1 {
		reason = reason[:MaxPayload-1]
	}
	p := make([]byte, 0, 1+len(reason))
	p = append(p, disconnectMarker)
	return append(p, reason...)
}

// DisconnectReason returns the reason text of a DISCONNECT payload. It
// tolerates an empty payload (as ocserv sends when it terminates a session)
// and a payload without the leading 0xb0.
func DisconnectReason(payload []byte) string {
	if len(payload) > 0 && payload[0] == disconnectMarker {
		payload = payload[1:]
	}
	return string(payload)
}

package dtls

import (
	"encoding/binary"

	"kvpn/dtls/recordlayer"
	"kvpn/internal/tlsprf"
)

// The legacy handshake's wire pieces: the ClientHello kvpn answers, DTLS
// 0.9/1.2 handshake messages and plaintext records, and the TLS PRFs.

// legacyHello is what the handshake needs of a ClientHello.
type legacyHello struct {
	random       []byte
	renegotiate  bool   // renegotiation_info or its SCSV offered
	msg          []byte // the whole message, DTLS header included
	messageSeq   uint16
	recordVer    uint16
	clientVer    uint16
	sessionID    []byte
	suites       []byte
	compressions []byte
}

// parseClientHello parses one unfragmented DTLS ClientHello message (RFC
// 6347 section 4.2.2 header, RFC 6347 section 4.2.1 and RFC 5246 section
// 7.4.1.2 body: client_version, random, session_id<0..32>,
// cookie<0..2^8-1>, cipher_suites<2..2^16-2>,
// compression_methods<1..2^8-1>, extensions<0..2^16-1> optional). msg
// starts at the handshake header; what follows the message is ignored.
func parseClientHello(msg []byte) (legacyHello, error) {
	var h legacyHello
	if len(msg) < hsHeaderLen || msg[0] != hsClientHello {
		return h, errHelloMalformed
	}
	length := int(uint24(msg[1:4]))
	h.messageSeq = binary.BigEndian.Uint16(msg[4:6])
	if uint24(msg[6:9]) != 0 || int(uint24(msg[9:12])) != length || hsHeaderLen+length > len(msg) {
		// Fragmented ClientHellos are not reassembled: this one has no
		// certificate or key share and fits any MTU.
		return h, errHelloMalformed
	}
	h.msg = msg[:hsHeaderLen+length]
	b := msg[hsHeaderLen : hsHeaderLen+length]
	if len(b) < 2+randomLen {
		return h, errHelloMalformed
	}
	h.clientVer = binary.BigEndian.Uint16(b)
	h.random = b[2 : 2+randomLen]
	b = b[2+randomLen:]
	var ok bool
	if h.sessionID, b, ok = vec8(b); !ok || len(h.sessionID) > 32 {
		return h, errHelloMalformed
	}
	if _, b, ok = vec8(b); !ok { // cookie
		return h, errHelloMalformed
	}
	if h.suites, b, ok = vec16(b); !ok || len(h.suites) < 2 || len(h.suites)%2 != 0 {
		return h, errHelloMalformed
	}
	if h.compressions, b, ok = vec8(b); !ok || len(h.compressions) < 1 {
		return h, errHelloMalformed
	}
	for i := 0; i < len(h.suites); i += 2 {
		if binary.BigEndian.Uint16(h.suites[i:]) == scsvRenegotiate {
			h.renegotiate = true
		}
	}
	if len(b) == 0 {
		return h, nil
	}
	exts, rest, ok := vec16(b)
	if !ok || len(rest) != 0 {
		return h, errHelloMalformed
	}
	for len(exts) > 0 {
		if len(exts) < 4 {
			return h, errHelloMalformed
		}
		typ := binary.BigEndian.Uint16(exts)
		var data []byte
		if data, exts, ok = vec16(exts[2:]); !ok {
			return h, errHelloMalformed
		}
		if typ == extRenegotiate {
			h.renegotiate = true
			_ = data
		}
	}
	return h, nil
}

func vec8(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, false
	}
	return b[1 : 1+int(b[0])], b[1+int(b[0]):], true
}

func vec16(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, false
	}
	return b[2 : 2+n], b[2+n:], true
}

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

func putUint24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

// hsMessage frames a handshake body as one unfragmented DTLS message.
func hsMessage(typ byte, seq uint16, body []byte) []byte {
	m := make([]byte, hsHeaderLen+len(body))
	m[0] = typ
	putUint24(m[1:4], len(body))
	binary.BigEndian.PutUint16(m[4:6], seq)
	putUint24(m[9:12], len(body))
	copy(m[hsHeaderLen:], body)
	return m
}

// plainRecord frames an epoch-0 record.
func plainRecord(ct recordlayer.ContentType, version uint16, seq uint64, body []byte) []byte {
	r := make([]byte, recordlayer.HeaderLen+len(body))
	r[0] = byte(ct)
	binary.BigEndian.PutUint16(r[1:3], version)
	binary.BigEndian.PutUint64(r[3:11], seq) // epoch 0, 48-bit seq
	binary.BigEndian.PutUint16(r[11:13], uint16(len(body)))
	copy(r[recordlayer.HeaderLen:], body)
	return r
}

// prf is the PRF of the channel's version: TLS 1.2's P_hash with the
// suite's hash (RFC 5246 section 5), or for DTLS 0.9 TLS 1.0's P_MD5 of
// the secret's first half XOR P_SHA-1 of its second (RFC 2246 section 5).
func prf(version uint16, suite recordlayer.Suite, secret []byte, label string, seed []byte, n int) []byte {
	if version == recordlayer.VersionDTLS09 {
		return tlsprf.PRF10(secret, label, seed, n)
	}
	return tlsprf.PRF12(suite.PRFHash(), secret, label, seed, n)
}

// Package dtls is kvpn's DTLS data channel in OpenConnect's PSK-NEGOTIATE
// mode: pion/dtls v3 runs the handshake, keyed with a PSK exported from the
// TLS session, and kvpn's own record layer (dtls/recordlayer) carries the data.
//
// The server owns its UDP socket and finds a session from the ClientHello's
// session_id, which carries the X-DTLS-App-ID the server handed out in the
// CONNECT answer (a source address alone proves nothing).
package dtls

import "errors"

// AppIDLen is the length of the X-DTLS-App-ID: 32 random bytes, sent in
// the CONNECT answer as 64 hex digits and echoed as the DTLS session_id.
const AppIDLen = 32

// Offsets into the first datagram of a DTLS 1.2 ClientHello (RFC 6347
// sections 4.1 and 4.2.2): a 13-byte record header, a 12-byte handshake
// header, the 2-byte client_version and the 32-byte random, then the
// session_id length byte and the session_id itself.
const (
	recordHeaderLen    = 13
	handshakeHeaderLen = 12
	sessionIDLenOffset = recordHeaderLen + handshakeHeaderLen + 2 + 32 // 59
	minClientHelloLen  = sessionIDLenOffset + 1 + AppIDLen             // 92
	contentHandshake   = 22
	typeClientHello    = 1
)

var errNotClientHello = errors.New("not a DTLS ClientHello with a 32-byte session_id")

// ClientHelloAppID returns the session_id of a DTLS ClientHello datagram,
// which in PSK-NEGOTIATE mode is the App-ID and in the legacy mode the
// X-DTLS-Session-ID. It checks only what routing
// needs: record type handshake, a DTLS record version (FEFF or FEFD, or
// 0100 for the legacy mode's DTLS 0.9), epoch
// 0, handshake type ClientHello in the first fragment, and a 32-byte
// session_id inside the datagram. pion validates the rest. The returned
// slice aliases b.
func ClientHelloAppID(b []byte) ([]byte, error) {
	if len(b) < minClientHelloLen {
		return nil, errNotClientHello
	}
	dtls := b[1] == 0xfe && (b[2] == 0xff || b[2] == 0xfd)
	dtls09 := b[1] == 0x01 && b[2] == 0x00 // Cisco's DTLS 0.9 (legacy mode)
	if b[0] != contentHandshake || !(dtls || dtls09) {
		return nil, errNotClientHello
	}
	if b[3] != 0 || b[4] != 0 { // epoch
		return nil, errNotClientHello
	}
	hs := b[recordHeaderLen:]
	if hs[0] != typeClientHello {
		return nil, errNotClientHello
	}
	// fragment_offset must be 0: the session_id is in the first fragment.
	if hs[6] != 0 || hs[7] != 0 || hs[8] != 0 {
		return nil, errNotClientHello
	}
	if b[sessionIDLenOffset] != AppIDLen {
		return nil, errNotClientHello
	}
	return b[sessionIDLenOffset+1 : sessionIDLenOffset+1+AppIDLen], nil
}

package dtls

import (
	"crypto/tls"
	"fmt"
)

// PSKLabel is the TLS exporter label of OpenConnect's PSK-NEGOTIATE mode.
// The 32-byte DTLS PSK is the exporter output with no context, computed on
// the TLS session of the CONNECT request (RFC 5705 for TLS 1.2, RFC 8446
// section 7.5 for TLS 1.3).
const PSKLabel = "EXPORTER-openconnect-psk"

// PSKLen is the PSK's length.
const PSKLen = 32

// PSK derives the DTLS PSK from the TLS session.
//
// Over TLS 1.2 without the extended master secret (GnuTLS's %COMPAT, which
// openconnect always uses and Debian's ocserv configures, disables EMS) Go
// refuses to export keying material unless the binary sets the GODEBUG
// tlsunsafeekm=1 (cmd/vpnd and cmd/vpnc do, with a //go:debug directive):
// the protocol requires it, and the value is only used as this PSK.
func PSK(cs tls.ConnectionState) ([]byte, error) {
	psk, err := cs.ExportKeyingMaterial(PSKLabel, nil, PSKLen)
	if err != nil {
		return nil, fmt.Errorf("dtls: deriving the PSK from the TLS session: %w", err)
	}
	return psk, nil
}

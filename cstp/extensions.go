package cstp

import "strings"

// kvpn's private protocol extensions (docs/protocol.md). They are only
// ever sent between two kvpn peers: a kvpn server recognises a kvpn client
// by the " kvpn" suffix of its User-Agent and then lists the extensions it
// supports in HeaderExtensions on its login answers; a kvpn client asks
// for an extension only when the server listed it. Stock openconnect and
// ocserv therefore never see an X-Kvpn header.
const (
	// HeaderExtensions lists the server's extensions, comma-separated.
	HeaderExtensions = "X-Kvpn-Extensions"
	// HeaderDTLSCipher, on CONNECT, asks for (request) or confirms
	// (answer) ChaCha20-Poly1305 as the preferred DTLS cipher.
	HeaderDTLSCipher = "X-Kvpn-DTLS-Cipher"
	// ExtDTLSChaCha names the ChaCha20-Poly1305 DTLS extension.
	ExtDTLSChaCha = "chacha20-poly1305"
	// HeaderCoalesce, on CONNECT, asks for (request) or confirms (answer)
	// that CSTP frames may share TLS records: kernel TLS then sends a
	// whole batch with one writev in full-size records.
	HeaderCoalesce = "X-Kvpn-CSTP-Coalesce"
	// ExtCoalesce names that extension.
	ExtCoalesce = "cstp-coalesce"
	// HeaderDTLSCID, on CONNECT, asks for (request) or confirms (answer)
	// RFC 9146 connection IDs on the DTLS channel, so a roaming client's
	// records name their session wherever they come from.
	HeaderDTLSCID = "X-Kvpn-DTLS-CID"
	// ExtDTLSCID names that extension.
	ExtDTLSCID = "dtls-cid"
	// HeaderGSO, on CONNECT, asks for (request) or confirms (answer) that
	// the client may send GSO-DATA frames over TLS: a whole TSO
	// super-packet with its virtio-net header, written to the server's TUN
	// as it is (one frame and one write per 64 KiB TCP burst).
	HeaderGSO = "X-Kvpn-CSTP-GSO"
	// ExtGSO names that extension.
	ExtGSO = "cstp-gso"
	// HeaderGSODown, on CONNECT, asks for (request) or confirms (answer)
	// GSO-DATA frames the other way, server to client: a client that
	// can write them to its TUN asks; vpnd then sends a TCP burst for
	// that client as one frame while its traffic goes over TLS.
	HeaderGSODown = "X-Kvpn-CSTP-GSO-Down"
	// ExtGSODown names that extension.
	ExtGSODown = "cstp-gso-down"
	// HeaderCookieRefresh, on a CONNECT answer to a kvpn client, says
	// every how many seconds the client should exchange its signed session
	// cookie for a fresh one (POST CookieRefreshPath with the cookie), so
	// that the cookie stays valid for a reconnect to any node.
	HeaderCookieRefresh = "X-Kvpn-Cookie-Refresh"
	// CookieRefreshPath is where a fresh cookie is handed out.
	CookieRefreshPath = "/+kvpn+/cookie"
	// ReasonServerShutdown is the TERMINATE reason vpnd sends when it stops.
	// The session stays resumable from its cookie (on a restarted vpnd or
	// another node), so vpnc reconnects instead of exiting.
	ReasonServerShutdown = "server shutting down"
	// ExtList is what vpnd announces.
	ExtList = ExtDTLSChaCha + "," + ExtCoalesce + "," + ExtDTLSCID + "," + ExtGSO + "," + ExtGSODown
)

// IsKvpnAgent reports whether a User-Agent is kvpn's vpnc.
func IsKvpnAgent(ua string) bool { return strings.HasSuffix(ua, " kvpn") }

// HasExtension reports whether a HeaderExtensions value lists ext.
func HasExtension(list, ext string) bool {
	for _, e := range strings.Split(list, ",") {
		if strings.TrimSpace(e) == ext {
			return true
		}
	}
	return false
}

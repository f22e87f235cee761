// Package record is the seam between the TLS handshake and everything that
// follows it. The handshake is done by crypto/tls; what it hands back is a
// Conn that carries TLS application data: the login HTTP exchange, the
// CONNECT request and the CSTP frames all run over it.
//
// Keeping the handshake apart from the record layer is what lets kernel TLS
// take over the socket right after the Finished messages, before any
// application data, without the layers above noticing: they only see a
// Conn. The one implementation is ktlsbridge.Conn, which runs each direction
// in the kernel or in its own userspace record engine.
package record

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// Conn is a TLS connection after its handshake.
//
// OpenConnect peers require one CSTP frame per TLS record in both directions
// (openconnect drops a record whose length is not 8+payload; ocserv kills the
// session), so writes are expressed in records: Write sends p as one record
// (p must fit one record, 16 KiB), WriteRecords sends many records with as
// few system calls as the engine can manage.
type Conn interface {
	io.Reader
	// Write sends p as exactly one TLS record.
	Write(p []byte) (int, error)
	// WriteRecords sends every bufs[i][offset:] as exactly one TLS record,
	// in order, atomically with respect to other writers. The offset bytes
	// in front of each record's plaintext are headroom the engine may
	// overwrite (at least Headroom), and each buffer's spare capacity is
	// tailroom (at least Tailroom), so a userspace engine seals in place.
	WriteRecords(bufs [][]byte, offset int) error
	// Close sends close_notify and closes the socket.
	Close() error
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	RemoteAddr() net.Addr
	LocalAddr() net.Addr
	// ConnectionState describes the completed handshake.
	ConnectionState() tls.ConnectionState
	// Engine names the record layer in use per direction, for logs and status.
	Engine() Engine
	// Describe says which engine runs each direction and, for a direction
	// left in userspace, why (the line logged once per session).
	Describe() string
	// SetCoalesce lets the engine pack many frames into each record when
	// it can (kernel TLS: one writev per batch in full-size records); an
	// engine that cannot keeps one record per frame. Only for a peer that
	// reads frames as a byte stream (the cstp-coalesce extension).
	SetCoalesce(on bool)
}

// Engine says which code encrypts and decrypts records in each direction.
type Engine struct {
	TX, RX string
}

func (e Engine) String() string {
	if e.TX == e.RX {
		return e.TX
	}
	return "tx=" + e.TX + ",rx=" + e.RX
}

// EngineUserspace is the userspace record layer (ktlsbridge's own).
const EngineUserspace = "userspace"

// Headroom and Tailroom are what a record needs around its plaintext: a
// 5-byte header plus TLS 1.2 AES-GCM's 8-byte explicit nonce in front; a
// 16-byte tag plus TLS 1.3's inner content type behind.
const (
	Headroom = 5 + 8
	Tailroom = 16 + 1
)

// ErrCorrupt marks a read error caused by what the peer sent: a record that
// fails authentication, a malformed record, a fatal alert. Such a session
// ends at once (its address is freed), unlike a lost connection.
var ErrCorrupt = errors.New("corrupt or forged TLS record")

// MaxRecordPayload is the largest plaintext a TLS record carries (RFC 8446
// section 5.1, RFC 5246 section 6.2.1).
const MaxRecordPayload = 16384

// aeadSuites are the TLS 1.2 suites kvpn offers: ECDHE with AEAD ciphers
// only, the ones kernel TLS can take over (AES-GCM, ChaCha20-Poly1305).
// TLS 1.3 suites are all AEAD and not configurable in crypto/tls.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// BaseConfig returns the TLS policy shared by vpnd and vpnc: TLS 1.2 and
// 1.3 with AEAD suites, no session tickets (a ticket sent after the
// handshake would be application-layer traffic through crypto/tls, and
// kernel TLS must own the record sequence from the first record), and no
// dynamic record sizing (one frame per record, whatever its size).
func BaseConfig() *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS12,
		CipherSuites:                aeadSuites,
		SessionTicketsDisabled:      true,
		DynamicRecordSizingDisabled: true,
	}
}

package server

import (
	"sync/atomic"
	"time"

	"kvpn/internal/hist"
)

// The server's counters, exported through Snapshot, the control socket
// and metrics.

// Counters are the server's drop and event counters.
type Counters struct {
	DropNoSession  atomic.Uint64 // packet from TUN for an address no session owns
	DropSpoofed    atomic.Uint64 // packet from a session with a foreign source
	DropNoIPv6     atomic.Uint64 // IPv6 packet from a session without an IPv6 address
	DropQueueFull  atomic.Uint64 // session's downlink queue full
	DropDetached   atomic.Uint64 // packet from TUN for a session without a connection
	DropTooBig     atomic.Uint64 // packet from TUN larger than the tunnel MTU
	DropRestricted atomic.Uint64 // packet from a session outside its routes (restrict-user-to-routes)
	LoginFailures  atomic.Uint64
	LoginThrottled atomic.Uint64
	// Login limits (limits.go).
	LoginBanned        atomic.Uint64 // refused: the address is past max-ban-score
	LoginBusy          atomic.Uint64 // not checked: the verification pool was full
	CredentialsTooLong atomic.Uint64 // refused unchecked: username or password over its bound
	SessionLimit       atomic.Uint64 // refused: max-clients or max-same-clients reached
	LoginConnLimit     atomic.Uint64 // connections closed at once: too many not logged in, none left in its handshake
	LoginConnEvicted   atomic.Uint64 // connections still in their TLS handshake closed to make room for a newcomer
	AcceptErrors       atomic.Uint64 // Accept failures (EMFILE and the like), each followed by a backoff
	BadRequests        atomic.Uint64
	// RequestTooLarge counts requests whose head was over a bound
	// (cstp.MaxHeadBytes, cstp.MaxStartLine, cstp.MaxHeaderLines).
	RequestTooLarge atomic.Uint64
	Logins          atomic.Uint64 // successful logins (sessions created)
	// Session limits (resume.go, reload.go, sessions.go).
	SessionTimeouts atomic.Uint64 // sessions ended, cookies refused: session-timeout since login
	UserChanged     atomic.Uint64 // sessions ended, cookies refused: user changed, locked or deleted
	WriteStalled    atomic.Uint64 // sessions ended: the client stopped reading (tunnel write deadline)

	// Failures the data path contains rather than letting them take the
	// daemon down or spin (issue #12). Recovered panics, each logged with
	// its stack, by goroutine:
	PanicsSession   atomic.Uint64 // a session's pumps or liveness watch: that session ended
	PanicsConn      atomic.Uint64 // a connection's login or CONNECT handling: that connection closed
	PanicsTUNReader atomic.Uint64 // the TUN reader (routeFromTUN): restarted after a backoff
	TUNReadErrors   atomic.Uint64 // failed TUN reads, each followed by a backoff
	// DTLSFallback counts packets for a session whose downstream traffic
	// goes over DTLS that were sent over TLS instead: its DTLS peer had
	// closed, or failed before sealing them.
	DTLSFallback  atomic.Uint64
	DropDTLSWrite atomic.Uint64 // packets sealed for DTLS whose send failed (lost: their plaintext is gone)
	DropTUNWrite  atomic.Uint64 // packets in TUN writes that failed
	// Legacy AnyConnect DTLS offers not made (offerLegacyDTLS): the
	// X-DTLS-Master-Secret was missing or malformed, or no offered suite
	// name is one vpnd resumes. The tunnel goes on over TLS.
	DTLSLegacyBadSecret atomic.Uint64
	DTLSLegacyNoSuite   atomic.Uint64
	// Client certificates (clientcert.go): refused in the TLS handshake,
	// by reason; missing where a login needs one; a certificate-bound
	// cookie presented without that user's certificate (or a cookie of
	// a password login where certificates are required).
	CertUnknownCA      atomic.Uint64
	CertExpired        atomic.Uint64
	CertRevoked        atomic.Uint64 // also sessions ended by a reloaded CRL
	CertNoUser         atomic.Uint64 // no user name in the cert-user-oid field
	CertInvalid        atomic.Uint64
	CertMissing        atomic.Uint64
	CertCookieMismatch atomic.Uint64

	TLSHandshakeFailed atomic.Uint64
	TLSHandshake       hist.Latency // successful TLS handshakes (and kTLS setup)

	// Issue #15 (hardening.go, scripts.go, isolate.go).
	AuthTimeouts         atomic.Uint64 // connections closed at auth-timeout before their CONNECT
	LoginIdleTimeouts    atomic.Uint64 // connections closed at login-idle-timeout before their CONNECT
	DropIsolated         atomic.Uint64 // packets between clients where isolate-clients forbids them
	ConnectScriptFail    atomic.Uint64 // sessions refused: connect-script failed or timed out
	DisconnectScriptFail atomic.Uint64 // disconnect-script runs that failed or timed out
	ScriptsSkipped       atomic.Uint64 // disconnect-script runs not started: too many waiting
}

// rateOK reports whether a rate-limited log line may be written now: the
// first at once, then at most every 5 s (the line carries the count).
func rateOK(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	l := last.Load()
	return now-l > int64(5*time.Second) && last.CompareAndSwap(l, now)
}

// Package session is the data pump of a VPN session: it moves batches of
// packets between a TUN device and a Channel to the peer, and keeps the
// channel alive with dead-peer detection and keepalives.
//
// The pump sees a channel only through the Link interface, so CSTP over
// userspace TLS, CSTP over kernel TLS and DTLS plug in without the pump
// changing.
package session

import (
	"errors"
	"fmt"
	"time"

	"kvpn/cstp"
)

// A channel to the peer has three parts, each used by its own code: Link
// (the packets, for the pumps), Keepable (liveness, for KeepAlive) and the
// goodbye (Disconnect, for whoever ends the session). Channel is all three.
//
// Packets live at bufs[i][offset:], as in tun.Device; the offset bytes in
// front of each packet are headroom that the channel may overwrite with its
// own headers, so that nothing is copied on the way out.

// Link carries one session's packets to and from the peer.
type Link interface {
	// ReadPackets blocks until at least one packet arrives, then returns as
	// many as are already buffered (up to len(bufs)). Control messages
	// (DPD, keepalive) are handled inside. A peer that disconnects yields a
	// *PeerClosedError.
	ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error)
	// WritePackets sends each packet bufs[i][offset:] as one message.
	WritePackets(bufs [][]byte, offset int) error
	// Close closes the channel without telling the peer.
	Close() error
	// Name describes the transport for logs ("tls/userspace").
	Name() string
}

// Keepable is what KeepAlive needs of a channel: the server's DTLS peers
// are kept alive too, though they receive through a shared listener.
type Keepable interface {
	// Ping sends a dead-peer-detection request.
	Ping() error
	// Keepalive sends a keepalive message.
	Keepalive() error
	// LastReceive and LastSend report when anything was last received from
	// or sent to the peer (liveness bookkeeping).
	LastReceive() time.Time
	LastSend() time.Time
}

// Channel is a whole channel to the peer: its packets, its liveness, and
// the goodbye.
type Channel interface {
	Link
	Keepable
	// Disconnect tells the peer the session ends (client: user logout;
	// server: terminate) and closes the channel.
	Disconnect(reason string) error
}

// PeerClosedError reports that the peer ended the session with a
// DISCONNECT or TERMINATE message.
type PeerClosedError struct {
	Terminate bool // server kicked us (TERMINATE) rather than DISCONNECT
	Reason    string
}

func (e *PeerClosedError) Error() string {
	kind := "disconnect"
	if e.Terminate {
		kind = "terminate"
	}
	if e.Reason == "" {
		return "peer sent " + kind
	}
	return fmt.Sprintf("peer sent %s: %s", kind, e.Reason)
}

// ErrDeadPeer is returned when the peer stayed silent past the DPD limit.
var ErrDeadPeer = errors.New("dead peer: no answer to DPD")

// ProtocolError reports that the peer broke the protocol (a malformed
// frame, an oversized packet, something that is not IP). The connection
// cannot be trusted to resynchronise and is closed.
type ProtocolError struct{ Err error }

func (e *ProtocolError) Error() string { return "protocol violation: " + e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

// protocolError wraps err as a ProtocolError if it is a parse error.
func protocolError(err error) error {
	for _, perr := range []error{cstp.ErrBadMagic, cstp.ErrBadVersion, cstp.ErrBadReserved, cstp.ErrFrameTooLong} {
		if errors.Is(err, perr) {
			return &ProtocolError{Err: err}
		}
	}
	return err
}

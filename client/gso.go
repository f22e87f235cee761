package client

import (
	"errors"
	"os"

	"kvpn/cstp"
	"kvpn/session"
	"kvpn/tun"
)

// gsoDisabled turns the cstp-gso extension off (KVPN_NO_CSTP_GSO=1).
var gsoDisabled = os.Getenv("KVPN_NO_CSTP_GSO") == "1"

// wantGSO reports whether to ask a kvpn server for cstp-gso: TCP bursts
// then cross the TLS channel as whole super-packets. Only the offload TUN
// backend reads them.
func (o *Options) wantGSO() bool {
	return !gsoDisabled && o.TunBackend == tun.BackendOffload
}

// newChannel makes the CSTP channel for a CONNECT answer p.
func newChannel(c *conn, p *cstp.TunnelParams, mtu int) (*session.CSTPChannel, error) {
	ch, err := session.NewCSTPChannel(c.rc, c.br, clientFrameLimit(mtu))
	if err != nil {
		return nil, err
	}
	if p.Extra.Get(cstp.HeaderGSO) == "1" {
		ch.SetPeerGSO()
	}
	return ch, nil
}

// gsoChannel returns the channel to send whole GSO frames on, or nil: the
// TLS channel when it carries the traffic (DTLS is not up) and the server
// takes GSO-DATA, and the TUN device can read frames.
func (t *tunnel) gsoChannel(vd tun.VirtioDevice) *session.CSTPChannel {
	if vd == nil || t.dtls.Load() != nil {
		return nil
	}
	if c := t.cur.Load(); c != nil && c.PeerGSO() {
		return c
	}
	return nil
}

// acceptGSO lets ch take GSO-DATA frames from the server when the CONNECT
// answer p confirmed cstp-gso-down (asked for only with the offload TUN):
// each frame is checked as vpnd checks the client's (tun.CheckGSOFrame,
// segments within what a DATA frame may carry; a malformed frame is a
// protocol violation) and written to the TUN whole. A write the kernel
// refuses loses that burst only, as a refused packet in a batch would.
func (t *tunnel) acceptGSO(ch *session.CSTPChannel, p *cstp.TunnelParams) {
	if p.Extra.Get(cstp.HeaderGSODown) != "1" {
		return
	}
	limit := clientFrameLimit(p.MTU)
	ch.AcceptGSO(func(frame []byte) error {
		if _, err := tun.CheckGSOFrame(frame, limit); err != nil {
			return &session.ProtocolError{Err: err}
		}
		vd, ok := t.dev.(tun.VirtioDevice)
		if !ok {
			return &session.ProtocolError{Err: errors.New("cstp: GSO-DATA frame, but this TUN device cannot take it")}
		}
		// A frame the kernel refuses is lost, as session.Uplink loses a
		// refused packet of a batch: the tunnel goes on.
		vd.WriteGSO(frame)
		return nil
	})
}

package client

import (
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

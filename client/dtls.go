package client

import (
	"context"
	"net"
	"net/netip"
	"time"

	"kvpn/cstp"
	"kvpn/dtls"
	"kvpn/session"
	"kvpn/tun"
)

// dtlsParams are what a TLS connection's CONNECT answer offered for DTLS.
type dtlsParams struct {
	cfg  dtls.ClientConfig
	live session.Liveness
}

// dtlsOffer extracts the DTLS offer from a CONNECT answer, or nil.
func (t *tunnel) dtlsOffer(c *conn, p *cstp.TunnelParams) *dtlsParams {
	if !t.o.NoDTLS && p.DTLSPort != 0 && len(p.DTLSAppID) == 0 && len(p.DTLSSessionID) > 0 {
		// We offer PSK-NEGOTIATE only; a server that answers with the
		// legacy AnyConnect mode (X-DTLS-Session-ID and an OpenSSL suite)
		// wants a master-secret resumption kvpn's client does not do.
		t.log.Warn("server offered only the legacy AnyConnect DTLS (X-DTLS-Session-ID), which vpnc does not speak; using TLS only",
			"suite", p.DTLSCipherSuite)
		return nil
	}
	if t.o.NoDTLS || p.DTLSPort == 0 || len(p.DTLSAppID) != dtls.AppIDLen {
		return nil
	}
	if p.DTLSCipherSuite != "PSK-NEGOTIATE" {
		t.log.Warn("server offered a DTLS mode kvpn does not speak; using TLS only", "suite", p.DTLSCipherSuite)
		return nil
	}
	psk, err := dtls.PSK(c.rc.ConnectionState())
	if err != nil {
		t.log.Warn("no DTLS: cannot derive its key", "err", err)
		return nil
	}
	ta, ok := c.rc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	dpd := time.Duration(p.DTLSDPD) * time.Second
	if dpd == 0 {
		dpd = time.Duration(p.DPD) * time.Second
	}
	if t.o.ForceDPD > 0 {
		dpd = t.o.ForceDPD
	}
	return &dtlsParams{
		cfg: dtls.ClientConfig{
			Server:  netip.AddrPortFrom(ip.Unmap(), uint16(p.DTLSPort)),
			AppID:   p.DTLSAppID,
			PSK:     psk,
			Timeout: dtlsHandshakeTimeout,
			ChaCha:  p.Extra.Get(cstp.HeaderDTLSCipher) == cstp.ExtDTLSChaCha,
			CID:     p.Extra.Get(cstp.HeaderDTLSCID) == "1",
		},
		live: session.Liveness{DPD: dpd, Keepalive: time.Duration(p.DTLSKeepalive) * time.Second},
	}
}

// dtlsHandshakeTimeout bounds one DTLS handshake attempt.
const dtlsHandshakeTimeout = 5 * time.Second

// startDTLS runs the DTLS channel for one TLS connection until ctx ends:
// handshake, pump, and on failure fall back to TLS and try again after
// DTLSAttemptPeriod. up is closed after the first attempt, success or not,
// so the caller can report the transport in use.
func (t *tunnel) startDTLS(ctx context.Context, dp *dtlsParams) (up chan struct{}) {
	up = make(chan struct{})
	if dp == nil {
		close(up)
		return up
	}
	go t.guard("DTLS", func() error {
		first := true
		bufs := tun.NewBuffers(uplinkBatch)
		for {
			ch, err := dtls.Dial(ctx, dp.cfg)
			if first {
				first = false
				if err == nil {
					t.dtls.Store(ch)
				}
				close(up)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				t.log.Info("DTLS handshake failed; traffic stays on TLS", "err", err, "retry-in", t.o.DTLSAttemptPeriod.String())
			} else {
				t.dtls.Store(ch)
				t.log.Info("DTLS up: traffic moves to DTLS", "transport", ch.Name(), "local", ch.LocalAddr().String())
				err := t.runDTLS(ctx, ch, dp.live, bufs)
				t.dtls.CompareAndSwap(ch, nil)
				ch.Close()
				if ctx.Err() != nil {
					return nil
				}
				t.log.Warn("DTLS lost: traffic falls back to TLS", "err", err, "retry-in", t.o.DTLSAttemptPeriod.String())
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(t.o.DTLSAttemptPeriod):
			}
		}
	})
	return up
}

// runDTLS pumps packets from the DTLS channel to the TUN device and
// watches its liveness until either fails.
func (t *tunnel) runDTLS(ctx context.Context, ch *dtls.ClientChannel, live session.Liveness, bufs [][]byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() {
		errc <- t.guard("DTLS uplink", func() error { return session.Uplink(ch, t.dev, bufs, tun.Headroom, nil) })
	}()
	go func() { errc <- t.guard("DTLS liveness", func() error { return session.KeepAlive(ctx, ch, live) }) }()
	err := <-errc
	cancel()
	ch.Close()
	<-errc
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// sender returns the channel downstream packets go to: DTLS when it is up,
// else TLS (nil while reconnecting).
func (t *tunnel) sender() session.Channel {
	if d := t.dtls.Load(); d != nil {
		return d
	}
	if c := t.cur.Load(); c != nil {
		return c
	}
	return nil
}

package server

import (
	"os"

	"kvpn/session"
	"kvpn/tun"
)

// gsoDisabled turns the cstp-gso extension off (KVPN_NO_CSTP_GSO=1): the
// server then neither offers nor accepts GSO-DATA frames.
var gsoDisabled = os.Getenv("KVPN_NO_CSTP_GSO") == "1"

// gsoWriter returns the server's TUN as a VirtioDevice when it can take
// GSO frames (the offload backend), else nil.
func (s *Server) gsoWriter() tun.VirtioDevice {
	if gsoDisabled {
		return nil
	}
	vd, _ := s.dev.(tun.VirtioDevice)
	return vd
}

// deliverGSO writes a GSO-DATA frame from the client to the TUN device as
// it is, after the checks any packet from the client passes: the frame
// must be well formed with segments within the tunnel MTU (a malformed one
// is a protocol violation), and its source must be the session's (the
// super-packet's one IP header stands for all its segments).
func (sess *Session) deliverGSO(vd tun.VirtioDevice, mtu int) func(frame []byte) error {
	return func(frame []byte) error {
		pkt, err := tun.CheckGSOFrame(frame, mtu)
		if err != nil {
			return &session.ProtocolError{Err: err}
		}
		keep, err := sess.checkTLS(pkt)
		if err != nil || !keep {
			return err
		}
		sess.traffic.AddIn(1, len(pkt))
		sess.gsoFrames.Add(1)
		if err := vd.WriteGSO(frame); err != nil {
			// The kernel refused this packet; the tunnel goes on, as for
			// a refused packet in a batch.
			sess.srv.tunWriteFailed(1, err)
		}
		return nil
	}
}

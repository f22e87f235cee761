// Package cstptest reads CSTP frames the simple way, for test peers of
// vpnd and vpnc: one allocation per frame, none of the production reader's
// buffer pooling.
package cstptest

import (
	"io"

	"kvpn/cstp"
)

// ReadFrame reads one CSTP frame (header and payload) from r.
func ReadFrame(r io.Reader) (cstp.FrameType, []byte, error) {
	var hdr [cstp.HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ, n, err := cstp.ParseHeader(hdr[:])
	if err != nil {
		return 0, nil, err
	}
	payload := make([]byte, n)
	_, err = io.ReadFull(r, payload)
	return typ, payload, err
}

package client

import (
	"errors"
	"io"
	"net"
	"testing"
)

// TestCertRefusal: a TLS alert about the certificate is an
// authentication failure that reconnecting cannot fix; other errors are
// left alone.
func TestCertRefusal(t *testing.T) {
	alert := &net.OpError{Op: "remote error", Err: errors.New("tls: revoked certificate")}
	err := certRefusal(alert)
	if !errors.Is(err, errCertRefused) || ExitCode(err) != ExitAuth {
		t.Fatalf("certificate alert: %v (exit %d)", err, ExitCode(err))
	}
	for _, other := range []error{nil, io.EOF, &net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")},
		&net.OpError{Op: "read", Err: errors.New("certificate")}} {
		if got := certRefusal(other); got != other {
			t.Errorf("certRefusal(%v) = %v", other, got)
		}
	}
}

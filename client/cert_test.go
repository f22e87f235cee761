package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"kvpn/ktlsbridge"
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
	ka := fmt.Errorf("reading answer: %w", &ktlsbridge.AlertError{Level: 2, Description: 48})
	if err := certRefusal(ka); !errors.Is(err, errCertRefused) || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("record-layer alert 48: %v", err)
	}
	if err := certRefusal(&ktlsbridge.AlertError{Level: 2, Description: 40}); errors.Is(err, errCertRefused) {
		t.Fatalf("handshake_failure alert taken for a certificate refusal: %v", err)
	}
	for _, other := range []error{nil, io.EOF, &net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")},
		&net.OpError{Op: "read", Err: errors.New("certificate")}} {
		if got := certRefusal(other); got != other {
			t.Errorf("certRefusal(%v) = %v", other, got)
		}
	}
}

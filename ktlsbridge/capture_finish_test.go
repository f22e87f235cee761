package ktlsbridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestCaptureFinishErrors: missing secrets and an unfinished record are
// reported.
func TestCaptureFinishErrors(t *testing.T) {
	done := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
	c := NewCapture(nil, false)
	if _, err := c.Finish(tls.ConnectionState{}); err == nil {
		t.Error("Finish of an incomplete handshake: no error")
	}
	if _, err := c.Finish(done); !errors.Is(err, errMissingSecrets) {
		t.Errorf("Finish without secrets: %v", err)
	}
	cr := strings.Repeat("ab", 32)
	kl := c.Config(nil).KeyLogWriter
	fmt.Fprintf(kl, "CLIENT_HANDSHAKE_TRAFFIC_SECRET %s %s\n", cr, strings.Repeat("11", 32))
	fmt.Fprintf(kl, "CLIENT_TRAFFIC_SECRET_0 %s %s\n", cr, strings.Repeat("22", 32))
	// A line may arrive in pieces.
	io.WriteString(kl, "SERVER_TRAFFIC_SECRET_0 "+cr)
	io.WriteString(kl, " "+strings.Repeat("33", 32)+"\n")
	s, err := c.Finish(done)
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientSecret[0] != 0x22 || s.ServerSecret[0] != 0x33 || s.ClientRandom[0] != 0xab {
		t.Fatalf("secrets %+v", s)
	}
	tls12 := done
	tls12.Version, tls12.CipherSuite = tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
	if _, err := c.Finish(tls12); !errors.Is(err, errMissingSecrets) {
		t.Errorf("TLS 1.2 without CLIENT_RANDOM: %v", err)
	}
	fmt.Fprintf(kl, "CLIENT_RANDOM %s %s\n", cr, strings.Repeat("44", 48))
	if _, err := c.Finish(tls12); !errors.Is(err, errMissingRandom) {
		t.Errorf("TLS 1.2 without the hello randoms: %v", err)
	}
	// A line of another connection (a config shared by two).
	fmt.Fprintf(kl, "CLIENT_TRAFFIC_SECRET_0 %s %s\n", strings.Repeat("cd", 32), strings.Repeat("22", 32))
	if _, err := c.Finish(done); err == nil {
		t.Error("key log of two connections: no error")
	}

	// Half a record read from the socket.
	c = NewCapture(nil, true)
	c.in.feed([]byte{23, 3, 3, 0, 10, 1, 2})
	if _, err := c.Finish(done); !errors.Is(err, errReadAhead) {
		t.Errorf("partial record: %v", err)
	}
}

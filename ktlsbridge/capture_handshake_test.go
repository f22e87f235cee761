package ktlsbridge

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"testing"
	"time"
)

// TestCaptureHelloRetry: a TLS 1.3 HelloRetryRequest (a ServerHello with a
// fixed random) is skipped, and the random of the real ServerHello kept.
func TestCaptureHelloRetry(t *testing.T) {
	for _, ourServer := range []bool{false, true} {
		t.Run(fmt.Sprintf("ourServer=%v", ourServer), func(t *testing.T) {
			var c *Capture
			s, err := ktHandshake(t, ktCase{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256}, ktOpts{
				ourServer: ourServer,
				tweak: func(srv, cli *tls.Config) {
					// The client sends a key share for its first group
					// only; a server that accepts only the second asks again.
					cli.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
					srv.CurvePreferences = []tls.CurveID{tls.CurveP256}
				},
				capture: func(cp *Capture) { c = cp },
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.serverRandom == helloRetryRandom || s.secrets.ServerRandom == ([32]byte{}) {
				t.Fatalf("server random %x", c.serverRandom)
			}
			if !s.cs.HandshakeComplete || s.cs.CurveID != tls.CurveP256 {
				t.Fatalf("curve %v", s.cs.CurveID)
			}
			dir := &c.in
			if ourServer {
				dir = &c.out
			}
			if dir.hello.hrr != 1 {
				t.Fatalf("%d HelloRetryRequests seen, want 1", dir.hello.hrr)
			}
			// The keys work (TLS 1.3 needs no random, but the capture
			// must not have tripped over the retry).
			ktExchangeSmall(t, s)
		})
	}
}

// ktExchangeSmall sends one record each way with the derived keys.
func ktExchangeSmall(t *testing.T, s *ktSession) {
	t.Helper()
	se, err := NewSealer(s.tx)
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOpener(s.rx)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("ping from our side")
	ktSealTo(t, s.raw, se, msg, contentApplicationData)
	got := make([]byte, len(msg))
	s.peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(s.peer, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("peer read %q, %v", got, err)
	}
	go s.peer.Write([]byte("pong from the peer"))
	rr := &ktRecordReader{conn: s.raw}
	typ, pt, err := op.Open(rr.next(t))
	if err != nil || typ != contentApplicationData || string(pt) != "pong from the peer" {
		t.Fatalf("Open: %d %q %v", typ, pt, err)
	}
}

// TestCaptureNewSessionTicket records facts about crypto/tls: a TLS 1.3
// server sends a NewSessionTicket after the handshake only if
// SessionTicketsDisabled is false and the client offered
// psk_key_exchange_modes, which a crypto/tls client does only when it has a
// ClientSessionCache. The ticket takes sequence number 0 of the server's
// direction and reaches our Opener as a handshake record (type 22, message
// type 4). Capture.Config prevents it from both sides: tickets off on our
// server, no session cache on our client.
func TestCaptureNewSessionTicket(t *testing.T) {
	c := ktCase{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256}
	for _, tc := range []struct {
		name        string
		peerTickets bool // the peer server has tickets on
		ourCache    bool // our client keeps a session cache after Config
		wantTicket  bool
	}{
		{"peer tickets off", false, true, false},
		{"peer tickets on, our cache cleared by Config", true, false, false},
		{"peer tickets on, our cache put back", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ktHandshake(t, c, ktOpts{
				tweak: func(srv, cli *tls.Config) {
					srv.SessionTicketsDisabled = !tc.peerTickets
					cli.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				},
				ourConfig: func(cfg *tls.Config) {
					if cfg.ClientSessionCache != nil {
						t.Error("Capture.Config kept the client session cache")
					}
					if tc.ourCache {
						cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
					}
				},
				peerAfter: func(peer *tls.Conn) error {
					_, err := peer.Write([]byte("data"))
					return err
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			op, err := NewOpener(s.rx)
			if err != nil {
				t.Fatal(err)
			}
			rr := &ktRecordReader{conn: s.raw}
			typ, pt, err := op.Open(rr.next(t))
			if err != nil {
				t.Fatalf("first record at seq 0: %v", err)
			}
			if !tc.wantTicket {
				if typ != contentApplicationData || string(pt) != "data" {
					t.Fatalf("first record: type %d %q", typ, pt)
				}
				return
			}
			if typ != contentHandshake || len(pt) == 0 || pt[0] != 4 {
				t.Fatalf("first record: type %d, % x; want a NewSessionTicket", typ, pt[:min(len(pt), 4)])
			}
			// The data follows at sequence number 1.
			if typ, pt, err = op.Open(rr.next(t)); err != nil || typ != contentApplicationData || string(pt) != "data" {
				t.Fatalf("second record: type %d %q %v", typ, pt, err)
			}
		})
	}
	// And Capture.Config turns tickets off on our server even if the base
	// config has them on.
	if cfg := NewCapture(nil, true).Config(&tls.Config{}); !cfg.SessionTicketsDisabled || cfg.KeyLogWriter == nil {
		t.Fatal("Config: tickets not disabled on the server side")
	}
	if cfg := NewCapture(nil, false).Config(nil); cfg.SessionTicketsDisabled || cfg.KeyLogWriter == nil {
		t.Fatal("Config(nil) on the client side")
	}
}

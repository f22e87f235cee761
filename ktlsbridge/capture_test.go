package ktlsbridge

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"kvpn/certs"
	"kvpn/record"
)

// The tests of this file and of keys_test.go and userspace_test.go run the
// real crypto/tls as the peer over a TCP loopback pair: our side does the
// handshake through a Capture, then speaks records with Sealer and Opener
// straight on the socket. (Helpers carry a "kt" prefix: other test files
// of the package have their own.)

var (
	ktCertOnce       sync.Once
	ktECDSA, ktRSA   tls.Certificate
	ktCertErr        error
	ktHandshakeLimit = 20 * time.Second
)

// ktCerts returns a self-signed ECDSA P-256 and an RSA 2048 certificate,
// made once per test binary.
func ktCerts(t testing.TB) (ecdsaCert, rsaCert tls.Certificate) {
	t.Helper()
	ktCertOnce.Do(func() {
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			ktCertErr = err
			return
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			ktCertErr = err
			return
		}
		if ktECDSA, ktCertErr = certs.SelfSigned("ktlsbridge.test", 24*time.Hour, ec); ktCertErr != nil {
			return
		}
		ktRSA, ktCertErr = certs.SelfSigned("ktlsbridge.test", 24*time.Hour, rk)
	})
	if ktCertErr != nil {
		t.Fatal(ktCertErr)
	}
	return ktECDSA, ktRSA
}

// ktTCPPair returns the two ends of a TCP connection over loopback.
func ktTCPPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// ktCase is one protocol version and cipher suite to negotiate.
type ktCase struct {
	version uint16
	suite   uint16
}

func (c ktCase) String() string {
	return strings.ReplaceAll(tls.VersionName(c.version), " ", "") + "/" + tls.CipherSuiteName(c.suite)
}

// ktCases are the supported suites Go's crypto/tls negotiates with itself.
// TLS_AES_256_GCM_SHA384 is missing: a Go server picks from its own fixed
// TLS 1.3 order (AES-128-GCM, AES-256-GCM, ChaCha20 with AES hardware, or
// ChaCha20 first when the client's first suite is not AES-GCM) and a Go
// client always offers all three, so two Go peers never agree on it. It is
// tested against OpenSSL in keys_test.go.
var ktCases = []ktCase{
	{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
	{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
	{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
	{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
	{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
	{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256},
	{tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256},
}

// ktConfigs returns a server and a client config that negotiate c.
func ktConfigs(t testing.TB, c ktCase) (srv, cli *tls.Config) {
	ec, rs := ktCerts(t)
	cert := ec
	switch c.suite {
	case tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		cert = rs
	}
	srv = &tls.Config{
		Certificates:                []tls.Certificate{cert},
		MaxVersion:                  c.version,
		SessionTicketsDisabled:      true,
		DynamicRecordSizingDisabled: true,
	}
	cli = &tls.Config{
		InsecureSkipVerify:          true, // self-signed test certificate
		MaxVersion:                  c.version,
		DynamicRecordSizingDisabled: true,
	}
	switch {
	case c.version == tls.VersionTLS12:
		srv.CipherSuites = []uint16{c.suite}
		cli.CipherSuites = []uint16{c.suite}
	case c.suite == tls.TLS_CHACHA20_POLY1305_SHA256:
		// Config.CipherSuites does not apply to TLS 1.3, but a Go server
		// prefers ChaCha20 when the client's first suite (of any version)
		// is not AES-GCM.
		cli.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	}
	return srv, cli
}

// ktOpts varies ktHandshake.
type ktOpts struct {
	ourServer bool                            // our side is the TLS server
	tweak     func(srv, cli *tls.Config)      // change the configs
	ourConn   func(net.Conn) net.Conn         // wrap our TCP conn under the Capture
	capture   func(*Capture)                  // adjust the Capture before the handshake
	ourConfig func(*tls.Config)               // change our config after Capture.Config
	peerAfter func(peer *tls.Conn) error      // run by the peer right after its handshake
	peerDone  func(err error, peer *tls.Conn) // told when peerAfter returned
}

// ktSession is our side after the handshake.
type ktSession struct {
	raw     net.Conn  // our side's TCP connection
	peer    *tls.Conn // the crypto/tls peer
	ours    *tls.Conn // never to be used again after Finish
	cs      tls.ConnectionState
	secrets *Secrets
	tx, rx  Keys // our side's directions
}

// ktHandshake runs a handshake between our side (crypto/tls over a
// Capture) and a plain crypto/tls peer. It fails the test if a handshake
// fails, and returns Finish's or DeriveKeys's error.
func ktHandshake(t *testing.T, c ktCase, o ktOpts) (*ktSession, error) {
	t.Helper()
	srvCfg, cliCfg := ktConfigs(t, c)
	if o.tweak != nil {
		o.tweak(srvCfg, cliCfg)
	}
	ourRaw, peerRaw := ktTCPPair(t)
	deadline := time.Now().Add(ktHandshakeLimit)
	ourRaw.SetDeadline(deadline)
	peerRaw.SetDeadline(deadline)

	capt := NewCapture(ourRaw, o.ourServer)
	if o.ourConn != nil {
		capt = NewCapture(o.ourConn(ourRaw), o.ourServer)
	}
	if o.capture != nil {
		o.capture(capt)
	}
	s := &ktSession{raw: ourRaw}
	var ourCfg *tls.Config
	if o.ourServer {
		ourCfg = capt.Config(srvCfg)
	} else {
		ourCfg = capt.Config(cliCfg)
	}
	if o.ourConfig != nil {
		o.ourConfig(ourCfg)
	}
	if o.ourServer {
		s.ours = tls.Server(capt.Conn(), ourCfg)
		s.peer = tls.Client(peerRaw, cliCfg)
	} else {
		s.ours = tls.Client(capt.Conn(), ourCfg)
		s.peer = tls.Server(peerRaw, srvCfg)
	}
	peerErr := make(chan error, 1)
	go func() {
		err := s.peer.Handshake()
		if err == nil && o.peerAfter != nil {
			err = o.peerAfter(s.peer)
			if o.peerDone != nil {
				o.peerDone(err, s.peer)
			}
		}
		peerErr <- err
	}()
	if err := s.ours.Handshake(); err != nil {
		t.Fatalf("our handshake: %v (peer: %v)", err, <-peerErr)
	}
	if err := <-peerErr; err != nil {
		t.Fatalf("peer handshake: %v", err)
	}
	ourRaw.SetDeadline(time.Time{})
	peerRaw.SetDeadline(time.Time{})
	s.cs = s.ours.ConnectionState()
	if s.cs.Version != c.version || s.cs.CipherSuite != c.suite {
		t.Fatalf("negotiated %s %s, want %v", tls.VersionName(s.cs.Version), tls.CipherSuiteName(s.cs.CipherSuite), c)
	}
	var err error
	if s.secrets, err = capt.Finish(s.cs); err != nil {
		return s, err
	}
	cli, srv, err := DeriveKeys(s.secrets)
	if err != nil {
		return s, err
	}
	s.tx, s.rx = cli, srv
	if o.ourServer {
		s.tx, s.rx = srv, cli
	}
	return s, nil
}

// ktRoles runs f for each case with our side as client and as server.
func ktRoles(t *testing.T, cases []ktCase, f func(t *testing.T, c ktCase, ourServer bool)) {
	for _, c := range cases {
		for _, ourServer := range []bool{false, true} {
			name := c.String() + "/ours=client"
			if ourServer {
				name = c.String() + "/ours=server"
			}
			t.Run(name, func(t *testing.T) { f(t, c, ourServer) })
		}
	}
}

// ktRecordReader splits what arrives on a connection into records.
type ktRecordReader struct {
	conn net.Conn
	buf  []byte
}

// next returns the next complete record (a copy), failing the test on a
// read error, an impossible header or a timeout.
func (r *ktRecordReader) next(t testing.TB) []byte {
	t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer r.conn.SetReadDeadline(time.Time{})
	tmp := make([]byte, 32<<10)
	for {
		n, err := RecordLen(r.buf)
		if err != nil {
			t.Fatalf("RecordLen(% x...): %v", r.buf[:min(len(r.buf), 8)], err)
		}
		if n > 0 && len(r.buf) >= n {
			rec := bytes.Clone(r.buf[:n])
			r.buf = r.buf[n:]
			return rec
		}
		m, err := r.conn.Read(tmp)
		r.buf = append(r.buf, tmp[:m]...)
		if err != nil && m == 0 {
			t.Fatalf("reading records (%d bytes buffered): %v", len(r.buf), err)
		}
	}
}

// ktPayload is n bytes of a pattern that depends on seed.
func ktPayload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ seed
	}
	return p
}

// ktSealTo seals p as one record of type typ and writes it to w.
func ktSealTo(t testing.TB, w io.Writer, se *Sealer, p []byte, typ uint8) {
	t.Helper()
	h := se.Headroom()
	buf := make([]byte, h+len(p)+se.Tailroom())
	copy(buf[h:], p)
	rec, err := se.Seal(buf, h, len(p), record.ContentType(typ))
	if err != nil {
		t.Fatalf("Seal %d bytes: %v", len(p), err)
	}
	if _, err := w.Write(rec); err != nil {
		t.Fatalf("write record: %v", err)
	}
}

// ktGatedConn delays each Read until the peer has finished what it does
// right after its handshake, or until a short wait is over: so when our
// crypto/tls reads the peer's last handshake flight, whatever the peer sent
// behind it is already in the socket and crypto/tls could read it ahead.
type ktGatedConn struct {
	net.Conn
	open <-chan struct{}
}

func (g *ktGatedConn) Read(p []byte) (int, error) {
	select {
	case <-g.open:
	case <-time.After(40 * time.Millisecond):
	}
	return g.Conn.Read(p)
}

// TestCaptureReadAhead: the peer sends application data right behind its
// last handshake message; with the Capture, crypto/tls takes none of it,
// Finish reports no error, and our Opener reads it from the socket at the
// first sequence number. (It matters for the TLS 1.3 server, which reads
// the client's Finished, and the TLS 1.2 client, which reads the server's;
// the other two roles finish reading before the peer can send data.)
func TestCaptureReadAhead(t *testing.T) {
	cases := []ktCase{
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256},
	}
	ktRoles(t, cases, func(t *testing.T, c ktCase, ourServer bool) {
		big, small := ktPayload(MaxPlaintext, 1), ktPayload(100, 2)
		open := make(chan struct{})
		s, err := ktHandshake(t, c, ktOpts{
			ourServer: ourServer,
			ourConn:   func(raw net.Conn) net.Conn { return &ktGatedConn{raw, open} },
			peerAfter: func(peer *tls.Conn) error {
				if _, err := peer.Write(big); err != nil {
					return err
				}
				_, err := peer.Write(small)
				return err
			},
			peerDone: func(error, *tls.Conn) { close(open) },
		})
		if err != nil {
			t.Fatalf("Finish: %v", err)
		}
		op, err := NewOpener(s.rx)
		if err != nil {
			t.Fatal(err)
		}
		rr := &ktRecordReader{conn: s.raw}
		for i, want := range [][]byte{big, small} {
			typ, pt, err := op.Open(rr.next(t))
			if err != nil || typ != contentApplicationData || !bytes.Equal(pt, want) {
				t.Fatalf("record %d (seq %d): type %d, %d bytes, %v; want %d bytes of data",
					i, s.rx.Seq+uint64(i), typ, len(pt), err, len(want))
			}
		}
	})
}

// TestCaptureReadAheadDetected: with the record-boundary limit switched off
// (a test hook), crypto/tls reads the peer's data ahead, as it does on a
// bare connection, and Finish reports it.
func TestCaptureReadAheadDetected(t *testing.T) {
	for _, tc := range []struct {
		c         ktCase
		ourServer bool
	}{
		{ktCase{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, false},
		{ktCase{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256}, true},
	} {
		t.Run(tc.c.String(), func(t *testing.T) {
			open := make(chan struct{})
			_, err := ktHandshake(t, tc.c, ktOpts{
				ourServer: tc.ourServer,
				ourConn:   func(raw net.Conn) net.Conn { return &ktGatedConn{raw, open} },
				capture:   func(c *Capture) { c.unbounded = true },
				peerAfter: func(peer *tls.Conn) error {
					_, err := peer.Write(ktPayload(MaxPlaintext, 3))
					return err
				},
				peerDone: func(error, *tls.Conn) { close(open) },
			})
			if !errors.Is(err, errReadAhead) {
				t.Fatalf("Finish: %v, want %v", err, errReadAhead)
			}
			t.Logf("Finish: %v", err)
		})
	}
}

// TestCaptureRandoms: the randoms taken from the hello records are the ones
// the key log names and the ones both sides use: Go exposes neither random
// directly, but keys derived from a wrong ServerRandom would fail in
// TestUserspaceInterop. Here: the key log's client random matches the
// ClientHello's, in both roles and versions, and the secrets are complete.
func TestCaptureRandoms(t *testing.T) {
	cases := []ktCase{
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256},
	}
	ktRoles(t, cases, func(t *testing.T, c ktCase, ourServer bool) {
		var logged bytes.Buffer
		s, err := ktHandshake(t, c, ktOpts{
			ourServer: ourServer,
			tweak: func(srv, cli *tls.Config) {
				if ourServer {
					srv.KeyLogWriter = &logged
				} else {
					cli.KeyLogWriter = &logged
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		sec := s.secrets
		if sec.ClientRandom == ([32]byte{}) || sec.ServerRandom == ([32]byte{}) || sec.ClientRandom == sec.ServerRandom {
			t.Fatalf("randoms: client %x server %x", sec.ClientRandom, sec.ServerRandom)
		}
		// The base config's own KeyLogWriter still gets every line.
		cr := hex.EncodeToString(sec.ClientRandom[:])
		lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
		for _, l := range lines {
			if f := strings.Fields(l); len(f) != 3 || f[1] != cr {
				t.Errorf("key log line %q: want client random %s", l, cr)
			}
		}
		switch c.version {
		case tls.VersionTLS12:
			if len(lines) != 1 || len(sec.MasterSecret) != 48 || sec.ClientSecret != nil {
				t.Errorf("TLS 1.2: %d key log lines, master secret %d bytes", len(lines), len(sec.MasterSecret))
			}
		case tls.VersionTLS13:
			// Two handshake and two application traffic secrets.
			if len(lines) != 4 || len(sec.ClientSecret) != 32 || len(sec.ServerSecret) != 32 || sec.MasterSecret != nil {
				t.Errorf("TLS 1.3: %d key log lines, secrets %d/%d bytes", len(lines), len(sec.ClientSecret), len(sec.ServerSecret))
			}
		}
	})
}

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

// TestRecordTracker: records split at every point of the stream are
// followed, reads are limited to the current record, and the hello random
// is found in a handshake message split across records.
func TestRecordTracker(t *testing.T) {
	var random [32]byte
	for i := range random {
		random[i] = byte(i + 1)
	}
	// A HelloRetryRequest, then a ServerHello split over two records, then
	// a ChangeCipherSpec and an encrypted record.
	msg := func(typ uint8, r [32]byte, extra int) []byte {
		body := append([]byte{3, 3}, r[:]...)
		body = append(body, make([]byte, extra)...)
		return append([]byte{typ, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	rec := func(typ uint8, body []byte) []byte {
		return append([]byte{typ, 3, 3, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	hrr := msg(msgServerHello, helloRetryRandom, 10)
	sh := msg(msgServerHello, random, 40)
	var stream []byte
	stream = append(stream, rec(contentHandshake, hrr)...)
	stream = append(stream, rec(contentHandshake, sh[:20])...)
	stream = append(stream, rec(contentHandshake, sh[20:])...)
	stream = append(stream, rec(contentChangeCipherSpec, []byte{1})...)
	stream = append(stream, rec(contentApplicationData, make([]byte, 30))...)
	stream = append(stream, rec(contentHandshake, nil)...)

	for chunk := 1; chunk <= len(stream); chunk++ {
		var tr recordTracker
		tr.hello.want = msgServerHello
		records := 0
		for off := 0; off < len(stream); {
			n := min(chunk, len(stream)-off, tr.limit())
			tr.feed(stream[off : off+n])
			off += n
			if !tr.partial() {
				records++
			}
		}
		if tr.partial() || !tr.hello.found || tr.hello.random != random || tr.afterCCS != 2 {
			t.Fatalf("chunk %d: partial %v found %v random %x afterCCS %d", chunk, tr.partial(), tr.hello.found, tr.hello.random, tr.afterCCS)
		}
		if chunk == len(stream) && records != 6 {
			t.Fatalf("%d record ends seen reading with the limit, want 6", records)
		}
	}
}

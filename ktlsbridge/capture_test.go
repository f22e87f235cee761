package ktlsbridge

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"kvpn/certs"
	"kvpn/record"
)

// The tests of the capture_*, keys_ and userspace_* test files run the
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

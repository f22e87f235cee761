package ktlsbridge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"kvpn/certs"
	"kvpn/record"
)

// expectKernel is set (KVPN_EXPECT_KTLS=1) by the VM harness, which runs
// this test binary under a kernel with kTLS: there every test asserts
// that the kernel took the connection. On a kernel without kTLS the same
// tests assert the userspace fallback.
var expectKernel = os.Getenv("KVPN_EXPECT_KTLS") == "1"

// exchangeSize is how much each end sends in TestEngines: less in the VM,
// whose software-emulated CPU is 25 to 170 times slower.
var exchangeSize = map[bool]int{false: 1 << 20, true: 128 << 10}[expectKernel]

func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := certs.SelfSigned("ktls", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// variant is one TLS version and cipher suite to test.
type variant struct {
	name    string
	version uint16
	suite   uint16 // TLS 1.2 only; TLS 1.3 suites are Go's choice
}

var variants = []variant{
	{"tls13", tls.VersionTLS13, 0},
	{"tls12-aes128gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	{"tls12-aes256gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
	{"tls12-chacha20", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
}

func configs(t testing.TB, v variant) (server, client *tls.Config) {
	server = record.BaseConfig()
	server.Certificates = []tls.Certificate{testCert(t)}
	server.MaxVersion = v.version
	client = record.BaseConfig()
	client.InsecureSkipVerify = true
	client.MaxVersion = v.version
	if v.suite != 0 {
		server.CipherSuites = []uint16{v.suite}
		client.CipherSuites = []uint16{v.suite}
	}
	return server, client
}

// end is one side of a test connection: our Conn, or crypto/tls's.
type end interface {
	io.ReadWriter
	Close() error
}

// pair connects two ends over loopback TCP. A nil mode makes that side a
// plain crypto/tls connection (the reference implementation).
func pair(t *testing.T, v variant, serverMode, clientMode *Mode) (srv, cli end) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	scfg, ccfg := configs(t, v)
	type res struct {
		e   end
		err error
	}
	done := make(chan res, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- res{nil, err}
			return
		}
		if serverMode == nil {
			tc := tls.Server(raw, scfg)
			done <- res{tc, tc.Handshake()}
			return
		}
		c, err := Server(context.Background(), raw, scfg, *serverMode)
		done <- res{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if clientMode == nil {
		tc := tls.Client(raw, ccfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		cli = tc
	} else {
		c, err := Client(context.Background(), raw, ccfg, *clientMode)
		if err != nil {
			t.Fatal(err)
		}
		cli = c
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { cli.Close(); r.e.Close() })
	return r.e, cli
}

func mode(m Mode) *Mode { return &m }

// checkEngines asserts kernel engines where the kernel has kTLS, else the
// userspace fallback with the reason recorded.
func checkEngines(t *testing.T, e end, m Mode) {
	t.Helper()
	c, ok := e.(*Conn)
	if !ok {
		return
	}
	want := EngineUserspace
	if expectKernel && m != ModeOff {
		want = EngineKernel
	}
	if got := c.Engine(); got.TX != want || got.RX != want {
		t.Fatalf("engines %v, want %s both ways (%s)", got, want, c.Describe())
	}
	if want == EngineUserspace && m != ModeOff {
		if c.KernelErrors[0] == nil || !strings.Contains(c.Describe(), "kernel TLS unavailable") {
			t.Fatalf("fallback chosen but not explained: %s", c.Describe())
		}
	}
	if m == ModeOff && !strings.HasSuffix(c.Describe(), "tx=userspace rx=userspace (kernel TLS off: ktls=off)") {
		t.Fatalf("ktls=off not named as the reason: %s", c.Describe())
	}
}

// TestDisableEnv: KVPN_DISABLE_KTLS=1 keeps both directions in userspace
// whatever the mode and the kernel (on a kTLS kernel too), and the line
// logged for the connection names the switch as the reason.
func TestDisableEnv(t *testing.T) {
	t.Setenv(DisableEnv, "1")
	srv, cli := pair(t, variants[0], mode(ModeAuto), mode(ModeOn))
	for _, e := range []end{srv, cli} {
		c := e.(*Conn)
		if got := c.Engine(); got.TX != EngineUserspace || got.RX != EngineUserspace {
			t.Fatalf("engines %v with %s=1", got, DisableEnv)
		}
		if want := "tx=userspace rx=userspace (kernel TLS off: KVPN_DISABLE_KTLS=1)"; !strings.HasSuffix(c.Describe(), want) {
			t.Fatalf("Describe() = %q, want the suffix %q", c.Describe(), want)
		}
	}
	exchange(t, srv, cli, 64<<10)
}

// exchange sends size bytes each way as 1400-byte records through
// WriteRecords (for our Conn) or Write, and compares SHA-256 sums.
func exchange(t *testing.T, a, b end, size int) {
	t.Helper()
	errc := make(chan error, 4)
	var sumA, sumB [32]byte
	recv := func(r end, out *[32]byte) {
		h := sha256.New()
		_, err := io.CopyN(h, r, int64(size))
		copy(out[:], h.Sum(nil))
		errc <- err
	}
	go writeSum(a, size, 1, errc)
	go writeSum(b, size, 2, errc)
	go recv(b, &sumB)
	go recv(a, &sumA)
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if sumB != payloadSum(size, 1) || sumA != payloadSum(size, 2) {
		t.Fatal("payload corrupted in transit")
	}
}

func payload(size int, seed byte) []byte {
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i*7) ^ seed
	}
	return buf
}

func payloadSum(size int, seed byte) [32]byte { return sha256.Sum256(payload(size, seed)) }

// writeSum writes the seeded payload: our Conn in batches of 1400-byte
// records through WriteRecords (with headroom), others with Write.
func writeSum(w end, size int, seed byte, errc chan<- error) {
	errc <- writeAll(w, payload(size, seed))
}

func writeAll(w end, p []byte) error {
	c, ok := w.(*Conn)
	if !ok {
		_, err := w.Write(p)
		return err
	}
	const frame, batch = 1400, 32
	bufs := make([][]byte, 0, batch)
	for len(p) > 0 {
		bufs = bufs[:0]
		for len(bufs) < batch && len(p) > 0 {
			n := min(frame, len(p))
			b := make([]byte, record.Headroom+n, record.Headroom+n+record.Tailroom)
			copy(b[record.Headroom:], p[:n])
			bufs = append(bufs, b)
			p = p[n:]
		}
		if err := c.WriteRecords(bufs, record.Headroom); err != nil {
			return err
		}
	}
	return nil
}

// TestEngines runs every version and cipher with both ends ours (auto),
// with a kernel-capable end against a userspace end (off), and with each
// end against crypto/tls itself.
func TestEngines(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			for _, tc := range []struct {
				name     string
				srv, cli *Mode
			}{
				{"auto-auto", mode(ModeAuto), mode(ModeAuto)},
				{"auto-off", mode(ModeAuto), mode(ModeOff)},
				{"off-auto", mode(ModeOff), mode(ModeAuto)},
				{"auto-stdlib", mode(ModeAuto), nil},
				{"stdlib-auto", nil, mode(ModeAuto)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					srv, cli := pair(t, v, tc.srv, tc.cli)
					if tc.srv != nil {
						checkEngines(t, srv, *tc.srv)
					}
					if tc.cli != nil {
						checkEngines(t, cli, *tc.cli)
					}
					exchange(t, srv, cli, exchangeSize)
				})
			}
		})
	}
}

// TestCloseNotify: Close sends close_notify; the peer reads io.EOF.
func TestCloseNotify(t *testing.T) {
	srv, cli := pair(t, variants[0], mode(ModeAuto), mode(ModeAuto))
	if _, err := cli.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want \"bye\" then EOF", got, err)
	}
}

// TestModeOn: without a kernel that takes the connection, ktls=on fails
// the handshake with ErrKernelRequired; with one, it succeeds.
func TestModeOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	scfg, ccfg := configs(t, variants[0])
	go func() {
		raw, err := ln.Accept()
		if err == nil {
			if c, err := Server(context.Background(), raw, scfg, ModeAuto); err == nil {
				io.Copy(io.Discard, c)
				c.Close()
			}
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Client(context.Background(), raw, ccfg, ModeOn)
	if expectKernel {
		if err != nil {
			t.Fatalf("ktls=on failed on a kTLS kernel: %v", err)
		}
		c.Close()
		return
	}
	if !errors.Is(err, ErrKernelRequired) {
		t.Fatalf("ktls=on without kernel TLS: got %v, want ErrKernelRequired", err)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "on", "off"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("maybe"); err == nil {
		t.Error("ParseMode accepted maybe")
	}
}

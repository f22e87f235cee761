package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/certs"
	"kvpn/cstp"
	"kvpn/dtls"
	"kvpn/ktlsbridge"
	"kvpn/netcfg"
	"kvpn/record"
	"kvpn/tun"
	"kvpn/tun/tuntest"
	"kvpn/udp"
)

// The idle-session memory harness: an in-process vpnd (TLS listener, DTLS
// listener, the tuntest TUN double) and the clients in a child process (this
// test binary run again), so that what the server process holds is the
// server's alone.

// idleFor is how long the sessions idle before the measurement: past the
// DTLS feed window (5 s after each takeover), after which pion's Conn is
// closed and dropped, as in a session that has been up for a while.
const idleFor = 6 * time.Second

// memClientEnv names the server's TCP address for the child process; its
// stdin carries one cookie a line, then an empty line.
const memClientEnv = "KVPN_MEMBENCH_SERVER"

// BenchmarkIdleSessionMemory brings up N sessions (TLS, CSTP and DTLS up,
// no traffic), lets them idle, and reports what each costs the server:
// heap objects and goroutine stacks (runtime/metrics) and the VmRSS delta.
//
//	go test ./server -run '^$' -bench IdleSessionMemory -benchtime 1x
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := 1000
	if v := os.Getenv("KVPN_MEMBENCH_SESSIONS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	// KVPN_MEMBENCH_BURST packets per session first (64 fill an uplink
	// batch), so that buffers a session keeps are touched, hence resident,
	// as in a session that carried traffic before it went idle.
	burst, _ := strconv.Atoi(os.Getenv("KVPN_MEMBENCH_BURST"))
	if os.Getenv("KVPN_MEMBENCH_HEAP") != "" {
		runtime.MemProfileRate = 1 // every allocation, for the per-component figures
	}
	for range b.N {
		r := measureIdleSessions(b, n, burst)
		b.ReportMetric(r.heapPerSession/1024, "heap-KiB/session")
		b.ReportMetric(r.stackPerSession/1024, "stack-KiB/session")
		b.ReportMetric(r.rssPerSession/1024, "rss-KiB/session")
		b.ReportMetric(r.goroutinesPerSession, "goroutines/session")
		b.ReportMetric(float64(r.dtls), "dtls-up")
	}
}

type idleMemory struct {
	heapPerSession, stackPerSession, rssPerSession float64
	goroutinesPerSession                           float64
	dtls                                           int
}

func measureIdleSessions(tb testing.TB, n, burst int) idleMemory {
	dir := tb.TempDir()
	cfg := DefaultConfig(dir)
	cfg.IPv4Network = "10.96.0.0/16"
	cfg.MaxClients, cfg.MaxSameClients = 0, 0
	cfg.CookieTimeout = 600
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	s, ln := serveMem(tb, cfg)

	cookies := make([]string, n)
	for i := range cookies {
		sess := s.newSession("alice", netip.Addr{})
		c, err := s.cookies.Issue(sess, time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		sess.cookie = c
		if cookies[i], err = s.sealTicket(sess); err != nil {
			tb.Fatal(err)
		}
	}

	before := memNow()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d", memClientEnv, ln.Addr(), s.udp.LocalAddr(), burst))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	go func() {
		for _, c := range cookies {
			fmt.Fprintln(stdin, c)
		}
		fmt.Fprintln(stdin)
	}()
	sc := bufio.NewScanner(stdout)
	var line string
	for sc.Scan() {
		tb.Log("client:", sc.Text())
		if line = sc.Text(); strings.HasPrefix(line, "up ") {
			break
		}
	}
	var up, dtlsUp int
	if _, err := fmt.Sscanf(line, "up %d dtls %d", &up, &dtlsUp); err != nil || up != n {
		tb.Fatalf("client: %q (%v)", line, err)
	}
	// Wait until the server sees every channel and peer up, then idle.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		chs, peers := countUp(s)
		if chs == n && peers == dtlsUp {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server: %d channels, %d DTLS peers of %d, %d", chs, peers, n, dtlsUp)
		}
	}
	time.Sleep(idleFor)
	chs, peers := countUp(s)
	var in uint64
	for _, sess := range s.list() {
		in += sess.traffic.InPackets.Load()
	}
	tb.Logf("after idling: %d channels, %d DTLS peers; %d packets came in", chs, peers, in)
	after := memNow()
	if f := os.Getenv("KVPN_MEMBENCH_HEAP"); f != "" {
		if out, err := os.Create(f); err == nil {
			pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
	}
	if f := os.Getenv("KVPN_MEMBENCH_GOROUTINES"); f != "" {
		if out, err := os.Create(f); err == nil {
			pprof.Lookup("goroutine").WriteTo(out, 1)
			out.Close()
		}
	}
	return idleMemory{
		heapPerSession:       float64(after.heap-before.heap) / float64(n),
		stackPerSession:      float64(after.stacks-before.stacks) / float64(n),
		rssPerSession:        float64(after.rss-before.rss) / float64(n),
		goroutinesPerSession: float64(after.goroutines-before.goroutines) / float64(n),
		dtls:                 dtlsUp,
	}
}

// newMemServer is a table server with a certificate, a DTLS listener on
// loopback and the tuntest TUN double.
// serveMem runs newMemServer(cfg) with user alice (password "secret")
// on a loopback listener until tb ends.
func serveMem(tb testing.TB, cfg *Config) (*Server, net.Listener) {
	tb.Helper()
	if err := auth.SetPassword(cfg.PasswdFile, "alice", "secret"); err != nil {
		tb.Fatal(err)
	}
	s := newMemServer(tb, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	go s.acceptLoop(ctx, ln, &wg, func(c net.Conn) { s.handleConn(ctx, c) })
	tb.Cleanup(func() {
		cancel()
		ln.Close()
		s.shutdown()
		wg.Wait()
		s.udp.Close()
		s.dev.Close()
	})
	return s, ln
}

func newMemServer(tb testing.TB, cfg *Config) *Server {
	logw := io.Discard
	if os.Getenv("KVPN_MEMBENCH_LOG") != "" {
		logw = os.Stderr
	}
	s := newServer(cfg, slog.New(slog.NewTextHandler(logw, nil)))
	s.addRoute = func(netip.Prefix) (*netcfg.Changes, error) { return netcfg.New(), nil }
	s.polMu.Lock()
	err := s.applyPolicy(cfg.pol)
	s.polMu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.ReloadPasswd(); err != nil {
		tb.Fatal(err)
	}
	if err := s.loadTickets(); err != nil {
		tb.Fatal(err)
	}
	cert, _, err := certs.LoadOrCreate(cfg.ServerCert, cfg.ServerKey, "vpn.example")
	if err != nil {
		tb.Fatal(err)
	}
	s.tlsCfg = record.BaseConfig()
	s.tlsCfg.Certificates = []tls.Certificate{cert}
	mtu := cfg.MTU
	s.batches.New = func() any { return newBatch(mtu) }
	dev, kernel := tuntest.NewPair()
	tb.Cleanup(func() { kernel.Close() })
	go func() { // the kernel side takes what the sessions send
		bufs, sizes := tun.NewBuffers(64), make([]int, 64)
		for {
			if _, err := kernel.Read(bufs, sizes, tun.Headroom); err != nil {
				return
			}
		}
	}()
	s.dev = dev
	uc, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.udp = uc
	s.dtls = dtls.NewListener(dtls.ListenerConfig{Conn: uc, Find: s.findDTLS, Sink: dev, Log: s.log})
	go s.dtls.Serve()
	go s.routeFromTUN()
	return s
}

func countUp(s *Server) (chs, peers int) {
	for _, sess := range s.list() {
		sess.mu.Lock()
		if sess.ch != nil {
			chs++
		}
		sess.mu.Unlock()
		if p := sess.peer.Load(); p != nil && p.Up() {
			peers++
		}
	}
	return chs, peers
}

type memSample struct {
	heap, stacks, rss uint64
	goroutines        int
}

// memNow collects garbage, returns freed pages to the kernel, and reads
// the live heap, the stacks and VmRSS.
func memNow() memSample {
	runtime.GC()
	runtime.GC() // a second cycle empties the sync.Pools (victim cache)
	debug.FreeOSMemory()
	ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(ms)
	return memSample{heap: ms[0].Value.Uint64(), stacks: ms[1].Value.Uint64(), rss: vmRSS(), goroutines: runtime.NumGoroutine()}
}

// vmRSS reads VmRSS from /proc/self/status, in bytes.
func vmRSS() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// TestMain runs the test binary as the client side of
// BenchmarkIdleSessionMemory when the benchmark starts it as its child
// process (memClientEnv set), else the tests.
func TestMain(m *testing.M) {
	if env := os.Getenv(memClientEnv); env != "" {
		os.Exit(idleMemoryClient(env))
	}
	os.Exit(m.Run())
}

// idleMemoryClient is the client side of BenchmarkIdleSessionMemory: a
// CONNECT per cookie read from stdin, then DTLS, then nothing until stdin
// closes. It returns the process's exit code.
func idleMemoryClient(env string) int {
	var failed atomic.Bool
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "memory client:", err)
		failed.Store(true)
	}
	tcpAddr, rest, _ := strings.Cut(env, ",")
	udpAddr, burstS, _ := strings.Cut(rest, ",")
	burst, _ := strconv.Atoi(burstS)
	dtlsAP := netip.MustParseAddrPort(udpAddr)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 4096), 4096)
	var cookies []string
	for in.Scan() && in.Text() != "" {
		cookies = append(cookies, in.Text())
	}
	var keep sync.Map
	var dtlsUp atomic.Int64
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				conn, p, err := memConnect(tcpAddr, c)
				if err != nil {
					fail(err)
					continue
				}
				keep.Store(conn, true)
				if err := memBurst(conn, p.Address, burst); err != nil {
					fail(err)
				}
				psk, err := dtls.PSK(conn.ConnectionState())
				if err != nil || len(p.DTLSAppID) != dtls.AppIDLen {
					continue
				}
				// The per-source ClientHello limit (dtls helloPerSecond)
				// paces a thousand handshakes from one address: retry.
				for range 20 {
					ch, err := dtls.Dial(context.Background(), dtls.ClientConfig{Server: dtlsAP, AppID: p.DTLSAppID, PSK: psk, Timeout: 3 * time.Second})
					if err == nil {
						keep.Store(ch, true)
						dtlsUp.Add(1)
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	for _, c := range cookies {
		work <- c
	}
	close(work)
	wg.Wait()
	fmt.Printf("up %d dtls %d\n", len(cookies), dtlsUp.Load())
	io.Copy(io.Discard, os.Stdin)
	// The connections must outlive the wait: unreferenced, the collector
	// would close their sockets (the fds' finalizers).
	runtime.KeepAlive(&keep)
	if failed.Load() {
		return 1
	}
	return 0
}

// memBurst sends n 1300-byte packets from the session's address as CSTP
// DATA frames, one record each.
func memBurst(conn record.Conn, src netip.Addr, n int) error {
	pkt := ipv4Packet(src.String(), "10.96.0.1")
	pkt = append(pkt, make([]byte, 1280)...)
	pkt[2], pkt[3] = byte(len(pkt)>>8), byte(len(pkt))
	frame := cstp.AppendFrame(nil, cstp.TypeData, pkt)
	for range n {
		if _, err := conn.Write(frame); err != nil {
			return err
		}
	}
	return nil
}

func memConnect(addr, cookie string) (record.Conn, *cstp.TunnelParams, error) {
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	cfg := record.BaseConfig()
	cfg.InsecureSkipVerify = true
	conn, err := ktlsbridge.Client(context.Background(), raw, cfg, ktlsbridge.ModeOff)
	if err != nil {
		return nil, nil, err
	}
	req := &cstp.ConnectRequest{Cookie: cookie, Hostname: "mem", BaseMTU: 1500, MTU: 1390, DTLSCipherSuite: "PSK-NEGOTIATE"}
	var b bytes.Buffer
	if err := req.WriteTo(&b, "vpn.example"); err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return nil, nil, err
	}
	resp, err := cstp.ReadResponse(bufio.NewReader(conn), http.MethodConnect)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	p, err := cstp.ParseTunnelParams(resp.Header)
	return conn, p, err
}

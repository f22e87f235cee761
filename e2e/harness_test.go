// Package e2e runs the real vpnd and vpnc binaries in network namespaces
// joined by veth pairs, and checks what a user would: pings, hashed bulk
// transfers, exit codes, and that nothing is left behind.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/harness"
	"kvpn/internal/testenv"
)

// bins holds the binaries built once by TestMain.
var bins struct {
	dir        string
	vpnd, vpnc string
	kvpnload   string // the load generator (soak test)
	self       string // this test binary, re-executed as a traffic helper
	err        error
}

func TestMain(m *testing.M) {
	if helper := os.Getenv(helperEnv); helper != "" {
		os.Exit(runHelper(helper, os.Args[1:]))
	}
	os.Exit(runTests(m))
}

// binsEnv names a directory holding vpnd, vpnc and kvpnload already built:
// the kTLS VM (e2e/ktlsvm) runs this package where there is no Go
// toolchain fast enough to build them.
const binsEnv = "KVPN_E2E_BINS"

func runTests(m *testing.M) int {
	bins.self, _ = os.Executable()
	if dir := os.Getenv(binsEnv); dir != "" {
		bins.dir = dir
		bins.vpnd, bins.vpnc = filepath.Join(dir, "vpnd"), filepath.Join(dir, "vpnc")
		bins.kvpnload = filepath.Join(dir, "kvpnload")
		for _, b := range []string{bins.vpnd, bins.vpnc, bins.kvpnload} {
			if _, err := os.Stat(b); err != nil {
				bins.err = fmt.Errorf("%s=%s: %v", binsEnv, dir, err)
			}
		}
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "kvpn-e2e-bin-")
	if err != nil {
		bins.err = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	bins.dir = dir
	bins.vpnd = filepath.Join(dir, "vpnd")
	bins.vpnc = filepath.Join(dir, "vpnc")
	bins.kvpnload = filepath.Join(dir, "kvpnload")
	for _, b := range []struct{ out, pkg string }{{bins.vpnd, "kvpn/cmd/vpnd"}, {bins.vpnc, "kvpn/cmd/vpnc"},
		{bins.kvpnload, "kvpn/cmd/kvpnload"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build: vpnd's run-as-user needs it
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
			break
		}
	}
	return m.Run()
}

// requireE2E checks the prerequisites of every test here: root, the tools,
// and the binaries.
func requireE2E(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, c := range []string{"ip", "ping", "ss", "nft"} {
		testenv.RequireCommand(t, c)
	}
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// netns is a network namespace made for one test.
type netns struct {
	name string
}

// newNS creates a namespace with loopback up and its own resolv.conf (so a
// client started with `ip netns exec` edits that file, never the host's).
// It is deleted when the test ends, whatever happens.
func newNS(t *testing.T, role string) *netns {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	n := &netns{name: "kvpn-" + role + "-" + hex.EncodeToString(rnd[:])}
	etc := filepath.Join("/etc/netns", n.name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(origResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Processes are killed by their own cleanups, registered later and
		// so run earlier.
		exec.Command("ip", "netns", "del", n.name).Run()
		os.RemoveAll(etc)
	})
	mustRun(t, "ip", "netns", "add", n.name)
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

// origResolv is the namespace's resolv.conf before any client touches it.
const origResolv = "# kvpn e2e namespace resolver\nnameserver 192.0.2.1\n"

func (n *netns) resolvConf() string { return filepath.Join("/etc/netns", n.name, "resolv.conf") }

// run runs a command in the namespace and fails the test if it fails.
func (n *netns) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.try(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

// try runs a command in the namespace and returns its combined output.
func (n *netns) try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// link joins two namespaces with a veth pair: a gets addrA, b gets addrB
// (CIDR, IPv4 or IPv6).
func link(t *testing.T, a *netns, addrA string, b *netns, addrB string) {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	tmpA, tmpB := "kva"+hex.EncodeToString(rnd[:]), "kvb"+hex.EncodeToString(rnd[:])
	mustRun(t, "ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB)
	mustRun(t, "ip", "link", "set", tmpA, "netns", a.name)
	mustRun(t, "ip", "link", "set", tmpB, "netns", b.name)
	for _, x := range []struct {
		ns        *netns
		dev, addr string
	}{{a, tmpA, addrA}, {b, tmpB, addrB}} {
		args := []string{"ip", "addr", "add", x.addr, "dev", x.dev}
		if strings.Contains(x.addr, ":") {
			// IPv6: skip duplicate address detection, so the address is
			// usable at once instead of "tentative" for a second or more.
			args = append(args, "nodad")
		}
		x.ns.run(t, args...)
		x.ns.run(t, "ip", "link", "set", x.dev, "up")
	}
}

// proc is a process started in a namespace, with its output captured.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *harness.Output
	done chan struct{}
	err  error
}

// start launches a command in the namespace. The test's cleanup kills it
// (SIGTERM, then SIGKILL) and logs its output if the test failed.
func (n *netns) start(t *testing.T, name string, stdin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &harness.Output{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		checkKernelTLS(t, p)
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	return p
}

// emulated is set (KVPN_E2E_EMULATED=1) by e2e/ktlsvm, which runs these
// tests on a software-emulated CPU 25 to 170 times slower than a real one:
// there the harness's timeouts are emulationSlowdown times longer, bulk
// transfers bulkDivisor times shorter, and vpnd's DPD longer (openconnect
// answers no DPD while its vpnc-script runs, which takes seconds there).
var emulated = os.Getenv("KVPN_E2E_EMULATED") == "1"

const (
	emulationSlowdown = 10
	bulkDivisor       = 16
)

// scaled is a timeout for this CPU: d, or longer when emulated.
func scaled(d time.Duration) time.Duration {
	if emulated {
		return d * emulationSlowdown
	}
	return d
}

// bulkSize is how many bytes a bulk transfer of n moves on this CPU.
func bulkSize(n int64) int64 {
	if emulated {
		return n / bulkDivisor
	}
	return n
}

// expectKTLS is set (KVPN_EXPECT_KTLS=1) by e2e/ktlsvm, which runs these
// tests on a kernel with kTLS: there every TLS connection of vpnd and vpnc
// must run its record layer in the kernel unless a test turned it off.
var expectKTLS = os.Getenv("KVPN_EXPECT_KTLS") == "1"

// checkKernelTLS, under expectKTLS, fails the test for each record layer
// line of p (vpnd or vpnc) that shows a direction left in userspace for
// any reason but a switch the test set, and logs how many connections the
// kernel took (e2e/ktlsvm counts these lines).
func checkKernelTLS(t *testing.T, p *proc) {
	if !expectKTLS {
		return
	}
	kernel := 0
	for _, line := range strings.Split(p.out.String(), "\n") {
		switch {
		case !strings.Contains(line, `msg="record layer"`):
		case strings.Contains(line, "tx=kernel rx=kernel"):
			kernel++
		case !strings.Contains(line, "(kernel TLS off:"):
			t.Errorf("%s: kernel TLS expected: %s", p.name, line)
		}
	}
	if kernel > 0 {
		t.Logf("KVPN-KTLS: %s ran %d TLS connections over kernel TLS", p.name, kernel)
	}
}

// stop sends SIGTERM and waits, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exitCode waits for the process to end and returns its exit code.
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(scaled(timeout)):
		t.Fatalf("%s did not exit within %s", p.name, scaled(timeout))
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// waitLog waits until the process's output contains s.
func (p *proc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	timeout = scaled(timeout)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), s) {
			return
		}
		select {
		case <-p.done:
			if strings.Contains(p.out.String(), s) {
				return
			}
			t.Fatalf("%s exited (%v) before logging %q\n%s", p.name, p.err, s, p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not log %q within %s\n%s", p.name, s, timeout, p.out.String())
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(timeout))
	defer cancel()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

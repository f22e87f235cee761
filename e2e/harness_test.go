// Package e2e runs the real vpnd and vpnc binaries in network namespaces
// joined by veth pairs, and checks what a user would: pings, hashed bulk
// transfers, exit codes, and that nothing is left behind.
package e2e

import (
	"context"
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

// netns is a network namespace made for one test (harness.NS).
type netns struct{ *harness.NS }

// newNS creates a namespace with loopback up and its own resolv.conf (so a
// client started with `ip netns exec` edits that file, never the host's).
// It is deleted when the test ends, whatever happens, with whatever still
// runs in it (processes are stopped by their own cleanups before that:
// registered later, they run earlier).
func newNS(t *testing.T, role string) *netns {
	t.Helper()
	n, err := harness.NewNS(context.Background(), t, "kvpn-"+role, origResolv)
	if err != nil {
		t.Fatal(err)
	}
	return &netns{n}
}

// origResolv is the namespace's resolv.conf before any client touches it.
const origResolv = "# kvpn e2e namespace resolver\nnameserver 192.0.2.1\n"

// run runs a command in the namespace and fails the test if it fails.
func (n *netns) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.try(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// try runs a command in the namespace and returns its combined output.
func (n *netns) try(args ...string) (string, error) {
	return n.Run(context.Background(), harness.Exec{Args: args, Combined: true})
}

// mustRun runs a command on the host and fails the test if it fails.
func mustRun(t *testing.T, args ...string) {
	t.Helper()
	var host *harness.NS
	if out, err := host.Run(context.Background(), harness.Exec{Args: args, Combined: true}); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// link joins two namespaces with a veth pair: a gets addrA, b gets addrB
// (CIDR, IPv4 or IPv6).
func link(t *testing.T, a *netns, addrA string, b *netns, addrB string) {
	t.Helper()
	id := harness.RandHex(3)
	if err := harness.Link(context.Background(), t,
		harness.End{NS: a.NS, Dev: "kva" + id, Addr: addrA}, harness.End{NS: b.NS, Dev: "kvb" + id, Addr: addrB}); err != nil {
		t.Fatal(err)
	}
}

// proc is a process started in a namespace, with its output captured
// (harness.Proc).
type proc struct{ *harness.Proc }

// start launches a command in the namespace. The test's cleanup stops it
// (SIGTERM, then SIGKILL) and logs its output if the test failed.
func (n *netns) start(t *testing.T, name string, stdin string, args ...string) *proc {
	t.Helper()
	hp, err := n.Start(t, harness.ProcSpec{Name: name, Args: args, Stdin: stdin, StopSignal: syscall.SIGTERM})
	if err != nil {
		t.Fatal(err)
	}
	return adopt(t, hp)
}

// adopt makes hp, started through the harness, a test process: the test's
// cleanup stops it and logs its output if the test failed. (Registered
// after Start's own cleanup, so this one runs first.)
func adopt(t *testing.T, hp *harness.Proc) *proc {
	p := &proc{hp}
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		checkKernelTLS(t, p)
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", hp.Name, p.Out.String())
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
	for _, line := range strings.Split(p.Out.String(), "\n") {
		switch {
		case !strings.Contains(line, `msg="record layer"`):
		case strings.Contains(line, "tx=kernel rx=kernel"):
			kernel++
		case !strings.Contains(line, "(kernel TLS off:"):
			t.Errorf("%s: kernel TLS expected: %s", p.Name, line)
		}
	}
	if kernel > 0 {
		t.Logf("KVPN-KTLS: %s ran %d TLS connections over kernel TLS", p.Name, kernel)
	}
}

// stop sends SIGTERM and waits, then SIGKILL.
func (p *proc) stop(grace time.Duration) { p.Stop(syscall.SIGTERM, grace) }

// exitCode waits for the process to end and returns its exit code.
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(scaled(timeout)):
		t.Fatalf("%s did not exit within %s", p.Name, scaled(timeout))
	}
	if p.Err() == nil {
		return 0
	}
	if ee, ok := p.Err().(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.Name, p.Err())
	return -1
}

// waitLog waits until the process's output contains s.
func (p *proc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	if err := p.WaitLog(context.Background(), s, scaled(timeout)); err != nil {
		t.Fatal(err)
	}
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := harness.Eventually(context.Background(), scaled(timeout), what, f); err != nil {
		t.Fatal(err)
	}
}

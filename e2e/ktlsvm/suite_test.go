package ktlsvm

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmSuite is the part of the e2e package that the emulated VM holds (TCG
// runs 25 to 170 times slower than the host): the TLS tunnel with its bulk
// transfer, bad input, reconnects, stock openconnect against vpnd, and the
// kTLS fallback test, which on this kernel checks the kernel case.
var vmSuite = []string{
	"TestPingAndBulk",
	"TestBadInputKeepsServing",
	"TestWrongPassword",
	"TestReconnectAfterNetworkCut",
	"TestReconnectAfterServerRestart",
	"TestOpenconnectToVpnd",
	"TestKTLSFallback",
}

// TestE2EInVM runs vmSuite, the e2e package's own tests, inside the Debian
// kernel VM, where TCP_ULP "tls" works: every tunnel there runs with
// ktls=auto as on a stock Debian or Ubuntu host, so the kernel does the
// record layer for real. The VM sees the host's file system read-only
// (Config.HostRoot), so the tests find ip, nft, openconnect and ocserv at
// their usual paths; the binaries are built here, since the guest's Go
// toolchain would run under emulation.
func TestE2EInVM(t *testing.T) {
	dir := t.TempDir()
	for pkg, test := range map[string]bool{"kvpn/cmd/vpnd": false, "kvpn/cmd/vpnc": false,
		"kvpn/cmd/kvpnload": false, "kvpn/e2e": true} {
		b := BuildStatic(t, pkg, test)
		if err := os.Rename(b, filepath.Join(dir, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}
	suite := vmSuite
	if only := os.Getenv("KVPN_VM_SUITE"); only != "" { // by hand: a comma list
		suite = strings.Split(only, ",")
	}
	run := "^(" + strings.Join(suite, "|") + ")$"
	script := fmt.Sprintf(`cd %s
export KVPN_E2E_BINS=%s KVPN_EXPECT_KTLS=1 KVPN_E2E_EMULATED=1
./e2e.test -test.v -test.count=1 -test.timeout=25m -test.run '%s'
`, dir, dir, run)
	start := time.Now()
	out, ok := Run(t, Config{
		HostRoot: true,
		Script:   script,
		MemoryMB: 2048,
		Timeout:  28 * time.Minute,
	})
	t.Logf("VM run took %s", time.Since(start).Round(time.Millisecond))
	if !ok {
		t.Fatalf("e2e tests failed in the kTLS VM:\n%s", out)
	}
	for _, name := range suite {
		if !regexp.MustCompile(`--- PASS: ` + name + ` `).MatchString(out) {
			t.Errorf("%s did not pass in the VM", name)
		}
	}
	if strings.Contains(out, "--- SKIP") {
		t.Errorf("tests skipped in the VM")
	}
	// The harness logs, per vpnd or vpnc process, how many connections
	// ran over kernel TLS, and fails a test on any that did not.
	kernel := 0
	for _, m := range regexp.MustCompile(`KVPN-KTLS: .* ran (\d+) TLS connections over kernel TLS`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		kernel += n
	}
	t.Logf("TLS connections over kernel TLS in the VM suite: %d", kernel)
	if kernel == 0 {
		t.Errorf("no TLS connection of the suite ran over kernel TLS")
	}
	if t.Failed() {
		t.Logf("VM output:\n%s", out)
	}
}

package ktlsvm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/testenv"
)

// Host tools the VM tests need, each missing one reported loudly.

// lookTool finds a command in PATH or in the sbin directories a non-login
// root shell may lack.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin", name)
}

func requireTools(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := lookTool(n)
		if err != nil {
			testenv.RequireCommand(t, n) // skips, or fails under KVPN_STRICT=1
			t.Fatalf("ktlsvm: %v", err)
		}
		paths[i] = p
	}
	return paths
}

// missing applies the testenv policy (skip loudly, fail under
// KVPN_STRICT=1) to prerequisites testenv has no helper for.
func missing(t testing.TB, what, why string) {
	t.Helper()
	if testenv.Strict() {
		t.Fatalf("FAIL (%s, and %s=1): %s", what, testenv.StrictEnv, why)
	}
	t.Skipf("SKIP (%s): %s", what, why)
}

// lockFile takes an exclusive flock on name, waiting as long as needed, and
// returns the unlock function.
func lockFile(t testing.TB, name string) func() {
	t.Helper()
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("ktlsvm: lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Logf("ktlsvm: waiting for %s (another VM or download is running)", name)
		start := time.Now()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Fatalf("ktlsvm: lock %s: %v", name, err)
		}
		t.Logf("ktlsvm: got %s after %v", name, time.Since(start).Round(time.Millisecond))
	}
	return func() { f.Close() }
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}

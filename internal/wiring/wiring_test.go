// Package wiring checks that the tree holds no code that only tests use
// and that kvpn's Linux-only build says so on other systems (issue #12).
// It has no code of its own: the checks run the go command on the module.
package wiring

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kvpn/internal/testenv"
)

// mains are the module's commands: everything reachable from them is
// production code. kvpnbench counts (make bench runs it); e2e and the
// kTLS VM probe are tests.
var mains = []string{"./cmd/...", "./bench/cmd/..."}

// allowDead lists functions deadcode reports as unreachable that stay on
// purpose, "package.Func" or "package.Type.Method" as deadcode prints
// them, each with the reason. Keep it empty if you can: code that only
// tests call belongs in a _test.go file, in a *test helper package, or
// nowhere.
var allowDead = map[string]string{}

// TestNoUnreachableCode runs deadcode (golang.org/x/tools/cmd/deadcode,
// pinned by go.mod's tool directive) over the commands: a function no
// command can reach is code that only tests run, or no one.
func TestNoUnreachableCode(t *testing.T) {
	root := moduleRoot(t)
	cmd := exec.Command("go", append([]string{"tool", "deadcode"}, mains...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "downloading") || strings.Contains(string(out), "dial tcp") {
			testenv.Unavailable(t, "the module proxy (go tool deadcode)", err)
		}
		t.Fatalf("go tool deadcode: %v\n%s", err, out)
	}
	line := regexp.MustCompile(`^(\S+): unreachable func: (\S+)$`)
	var dead []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Errorf("unexpected deadcode output: %q", sc.Text())
			continue
		}
		pkg := filepath.Base(filepath.Dir(strings.SplitN(m[1], ":", 2)[0]))
		if _, ok := allowDead[pkg+"."+m[2]]; ok {
			continue
		}
		dead = append(dead, sc.Text())
	}
	if len(dead) > 0 {
		t.Fatalf("functions no command reaches (use them, move them into the tests that call them, or delete them):\n%s",
			strings.Join(dead, "\n"))
	}
}

// TestLinuxOnly: on another GOOS every command fails to build with the one
// error that names the reason, not with whatever a Linux-only package
// happens to lack first.
func TestLinuxOnly(t *testing.T) {
	root := moduleRoot(t)
	for _, goos := range []string{"darwin", "windows"} {
		cmd := exec.Command("go", append([]string{"build", "-o", t.TempDir() + string(filepath.Separator)}, mains...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("GOOS=%s go build %s succeeded; kvpn is Linux only", goos, strings.Join(mains, " "))
			continue
		}
		var other []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.HasPrefix(l, "# ") || strings.Contains(l, "undefined: kvpn_requires_linux") {
				continue
			}
			other = append(other, l)
		}
		if n := strings.Count(string(out), "undefined: kvpn_requires_linux"); n != 4 || len(other) > 0 {
			t.Errorf("GOOS=%s: want exactly the 4 commands failing with undefined: kvpn_requires_linux, got:\n%s", goos, out)
		}
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

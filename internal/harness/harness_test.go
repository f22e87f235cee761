//go:build linux

package harness

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/testenv"
)

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{{"a\nb\nc\n", 2, "b\nc"}, {"a\nb\n", 5, "a\nb"}, {"a\nb\n", 0, "a\nb\n"}} {
		if got := Tail(tc.s, tc.n); got != tc.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestEventually(t *testing.T) {
	n := 0
	if err := Eventually(context.Background(), time.Second, "third try", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("err %v after %d calls, want nil after 3", err, n)
	}
	err := Eventually(context.Background(), 150*time.Millisecond, "never", func() error { return errors.New("no") })
	if err == nil || err.Error() != "never: no" {
		t.Fatalf("err %v, want never: no", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Eventually(ctx, time.Minute, "cancelled", func() error { return errors.New("no") }); err != context.Canceled {
		t.Fatalf("err %v, want %v", err, context.Canceled)
	}
}

// TestNamespaces builds two linked namespaces, runs commands and
// processes in them, and checks that the cleanups leave nothing behind:
// not the namespaces, their /etc/netns files, the processes, nor one left
// running in the background.
func TestNamespaces(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"ip", "ping", "sh", "sleep"} {
		testenv.RequireCommand(t, c)
	}
	ctx := context.Background()
	var nss []*NS
	var procs []*Proc
	stray := -1
	t.Run("use", func(t *testing.T) {
		a, err := NewNS(ctx, t, "kvpnh-a", "nameserver 192.0.2.1\n")
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewNS(ctx, t, "kvpnh-b", "nameserver 192.0.2.1\n")
		if err != nil {
			t.Fatal(err)
		}
		nss = []*NS{a, b}
		if got, _ := os.ReadFile(a.ResolvConf()); string(got) != "nameserver 192.0.2.1\n" {
			t.Fatalf("resolv.conf %q", got)
		}
		id := RandHex(3)
		if err := Link(ctx, t, End{a, "kha" + id, "192.168.251.1/24"}, End{b, "khb" + id, "fd00:251::2/64"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Run(ctx, Exec{Args: []string{"ip", "addr", "add", "192.168.251.2/24", "dev", "khb" + id}}); err != nil {
			t.Fatal(err)
		}
		if out, err := a.Run(ctx, Exec{Args: []string{"ping", "-c", "1", "-W", "2", "192.168.251.2"}, Timeout: 10 * time.Second}); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, err := a.Run(ctx, Exec{Args: []string{"ip", "link", "show", "nonesuch"}, Combined: true})
		if _, ok := err.(*exec.ExitError); !ok || !strings.Contains(out, "does not exist") {
			t.Fatalf("combined: %v %q", err, out)
		}
		if _, err := a.Run(ctx, Exec{Args: []string{"ip", "link", "show", "nonesuch"}}); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("error without the command's standard error: %v", err)
		}
		if _, err := a.Run(ctx, Exec{Args: []string{"sleep", "5"}, Timeout: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("timeout: %v", err)
		}
		// A process in the background, that only Delete can find.
		out, err = b.Run(ctx, Exec{Args: []string{"sh", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo $!"}})
		if err != nil {
			t.Fatal(err)
		}
		if stray, err = strconv.Atoi(strings.TrimSpace(out)); err != nil {
			t.Fatal(err)
		}

		p, err := a.Start(t, ProcSpec{Name: "echo", Args: []string{"sh", "-c", "echo up 42; exec sleep 60"}})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		if err := p.WaitLog(ctx, "up 42", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if m, err := p.WaitFor(ctx, regexp.MustCompile(`up (\d+)`), time.Second); err != nil || m[1] != "42" {
			t.Fatalf("WaitFor: %v %v", m, err)
		}
		if pids := a.Pids(); !contains(pids, p.Cmd.Process.Pid) {
			t.Fatalf("pid %d not in %v", p.Cmd.Process.Pid, pids)
		}
		err = p.WaitLog(ctx, "never", 100*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), `echo did not log "never" within 100ms:`+"\nup 42") {
			t.Fatalf("WaitLog error: %v", err)
		}

		// One that ignores SIGTERM, in a group of its own: Stop kills it.
		q, err := b.Start(t, ProcSpec{Name: "stubborn", OwnGroup: true, Tail: 1,
			Args: []string{"sh", "-c", "trap '' TERM; echo one; echo two; sleep 60 & wait"}})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, q)
		if err := q.WaitLog(ctx, "two", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		q.Stop(syscall.SIGTERM, 200*time.Millisecond)
		if !q.Exited() || q.Err() == nil {
			t.Fatalf("after Stop: exited %v, err %v", q.Exited(), q.Err())
		}
		if _, err := q.WaitFor(ctx, regexp.MustCompile("three"), time.Second); err == nil ||
			!strings.HasPrefix(err.Error(), "stubborn exited (signal: killed) before logging /three/:\ntwo") {
			t.Fatalf("WaitFor error: %v", err)
		}
	})
	if len(nss) != 2 {
		return
	}
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still runs", p.Name)
		}
	}
	for _, n := range nss {
		for _, f := range []string{"/run/netns/" + n.Name, "/etc/netns/" + n.Name} {
			if _, err := os.Stat(f); err == nil {
				t.Errorf("%s left behind", f)
			}
		}
		if pids := n.Pids(); len(pids) > 0 {
			t.Errorf("processes %v left in %s", pids, n.Name)
		}
	}
	// Killed, it may stay a zombie until init reaps it.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(stray) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
		t.Errorf("background process %d left running: %s", stray, b)
		syscall.Kill(stray, syscall.SIGKILL)
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

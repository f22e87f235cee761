//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kvpn/bench"
	"kvpn/internal/harness"
)

// runner owns everything the harness creates, as a stack of cleanups
// unwound in reverse: at the end of each case, on failure, and on a
// signal.
type runner struct {
	ctx        context.Context
	s          bench.Settings
	vpnd, vpnc string
	kvpnload   string // the load generator, for the sessions part
	clkTck     float64
	began      time.Time

	unwindMu sync.Mutex // one unwinder at a time
	mu       sync.Mutex
	stack    []cleanup
	procs    []*proc // every long-running process started, in order
}

type cleanup struct {
	what string
	f    func()
}

func newRunner(ctx context.Context, s bench.Settings) *runner {
	r := &runner{ctx: ctx, s: s, clkTck: 100, began: time.Now()}
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			r.clkTck = float64(n)
		}
	}
	return r
}

func (r *runner) logf(format string, args ...any) {
	el := time.Since(r.began).Round(time.Second)
	fmt.Fprintf(os.Stderr, "[%02d:%02d] %s\n", int(el.Minutes()), int(el.Seconds())%60, fmt.Sprintf(format, args...))
}

// onCleanup pushes f; it runs when the stack is unwound past it.
func (r *runner) onCleanup(what string, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stack = append(r.stack, cleanup{what, f})
}

func (r *runner) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.stack)
}

// unwindTo runs the cleanups pushed after mark m, newest first.
func (r *runner) unwindTo(m int) {
	r.unwindMu.Lock()
	defer r.unwindMu.Unlock()
	for {
		r.mu.Lock()
		if len(r.stack) <= m {
			r.mu.Unlock()
			return
		}
		c := r.stack[len(r.stack)-1]
		r.stack = r.stack[:len(r.stack)-1]
		r.mu.Unlock()
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.logf("cleanup %s: panic %v", c.what, p)
				}
			}()
			c.f()
		}()
	}
}

func (r *runner) unwindAll() { r.unwindTo(0) }

// sleep waits d or until the run is interrupted.
func (r *runner) sleep(d time.Duration) error {
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// netns is a network namespace this harness created.
type netns struct {
	name string
	ino  uint64 // inode of the namespace, to find the processes in it
}

// newNS creates a namespace with loopback up and its own resolv.conf (so
// nothing run with `ip netns exec` can touch the host's).
func (r *runner) newNS(role string) (*netns, error) {
	n := &netns{name: "kvpnb-" + role + "-" + randHex(3)}
	etc := filepath.Join("/etc/netns", n.name)
	r.onCleanup("namespace "+n.name, func() {
		r.killNS(n)
		exec.Command("ip", "netns", "del", n.name).Run()
		os.RemoveAll(etc)
	})
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("# kvpnbench namespace\nnameserver 192.0.2.1\n"), 0o644); err != nil {
		return nil, err
	}
	if _, err := r.cmd(nil, 10*time.Second, "ip", "netns", "add", n.name); err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", n.name), &st); err != nil {
		return nil, fmt.Errorf("namespace %s: %v", n.name, err)
	}
	n.ino = st.Ino
	if _, err := r.cmd(n, 10*time.Second, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// pids lists the processes in the namespace (all of them were started by
// this harness, directly or as their children).
func (n *netns) pids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && st.Ino == n.ino {
			out = append(out, pid)
		}
	}
	return out
}

// killNS kills whatever still runs in the namespace (say ocserv workers
// or a vpnc-script), by process id.
func (r *runner) killNS(n *netns) {
	if n.ino == 0 {
		return
	}
	for i := 0; i < 40; i++ {
		pids := n.pids()
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.logf("warning: processes %v still in namespace %s", n.pids(), n.name)
}

// cpuTicks samples utime+stime of the processes in the namespace whose
// name starts with prefix.
func (n *netns) cpuTicks(prefix string) map[int]uint64 {
	m := map[int]uint64{}
	for _, pid := range n.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		comm, ticks, err := bench.ParseStat(string(b))
		if err == nil && strings.HasPrefix(comm, prefix) {
			m[pid] = ticks
		}
	}
	return m
}

// cpuSeconds is the CPU time used between two samples (processes that
// appeared in between count in full).
func (r *runner) cpuSeconds(before, after map[int]uint64) float64 {
	var d uint64
	for pid, a := range after {
		if b := before[pid]; a >= b {
			d += a - b
		}
	}
	return float64(d) / r.clkTck
}

// udpCounters reads the namespace's UDP counters from /proc/net/snmp.
func (r *runner) udpCounters(n *netns) map[string]int64 {
	out, err := r.cmd(n, 10*time.Second, "cat", "/proc/net/snmp")
	if err != nil {
		return nil
	}
	m, _ := bench.ParseSNMP(out, "Udp")
	return m
}

// cmd runs a command (in ns unless nil) to completion and returns its
// standard output; the error carries standard error.
func (r *runner) cmd(ns *netns, timeout time.Duration, args ...string) (string, error) {
	return r.cmdIn(ns, timeout, "", args...)
}

func (r *runner) cmdIn(ns *netns, timeout time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	if ns != nil {
		args = append([]string{"ip", "netns", "exec", ns.name}, args...)
	}
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = 2 * time.Second
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s", timeout)
		}
		return out.String(), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(tail(errb.String()+out.String(), 8)))
	}
	return out.String(), nil
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// proc is a long-running process started in a namespace.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  harness.Output
	done chan struct{}
	err  error
}

// start runs args in ns in its own process group (a Ctrl-C at the
// terminal reaches only the harness, which then stops everything in
// order). stopSig is what asks it to exit cleanly.
func (r *runner) start(ns *netns, name string, stopSig syscall.Signal, stdin string, args ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.Stdin = strings.NewReader(stdin)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	r.onCleanup("stop "+name, func() { p.stop(stopSig, 5*time.Second) })
	return p, nil
}

// procsSince returns the processes started after the first n.
func (r *runner) procsSince(n int) []*proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*proc(nil), r.procs[n:]...)
}

func (r *runner) procCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.procs)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the exit; after grace it kills the
// process group.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// waitFor waits until the output matches re and returns the match.
func (r *runner) waitFor(p *proc, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited (%v) before logging /%s/:\n%s", p.name, p.err, re, tail(p.out.String(), 15))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not log /%s/ within %s:\n%s", p.name, re, timeout, tail(p.out.String(), 15))
		}
		if err := r.sleep(50 * time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// eventually retries f until it returns nil, the timeout passes or the
// run is interrupted.
func (r *runner) eventually(timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %v", what, err)
		}
		if err := r.sleep(100 * time.Millisecond); err != nil {
			return err
		}
	}
}

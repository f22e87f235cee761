//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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
	procs    []*harness.Proc // every long-running process started, in order
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

// Logf is logf; with Cleanup it makes the runner a harness.Cleaner.
func (r *runner) Logf(format string, args ...any) { r.logf(format, args...) }

// Cleanup pushes f, the cleanup of something internal/harness made.
func (r *runner) Cleanup(f func()) { r.onCleanup("namespace, veth or process", f) }

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
func (r *runner) sleep(d time.Duration) error { return harness.Sleep(r.ctx, d) }

// newNS creates a namespace with loopback up and its own resolv.conf (so
// nothing run with `ip netns exec` can touch the host's).
func (r *runner) newNS(role string) (*harness.NS, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
	defer cancel()
	return harness.NewNS(ctx, r, "kvpnb-"+role, "# kvpnbench namespace\nnameserver 192.0.2.1\n")
}

// cpuTicks samples utime+stime of the processes in the namespace whose
// name starts with prefix.
func cpuTicks(n *harness.NS, prefix string) map[int]uint64 {
	m := map[int]uint64{}
	for _, pid := range n.Pids() {
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
func (r *runner) udpCounters(n *harness.NS) map[string]int64 {
	out, err := r.cmd(n, 10*time.Second, "cat", "/proc/net/snmp")
	if err != nil {
		return nil
	}
	m, _ := bench.ParseSNMP(out, "Udp")
	return m
}

// cmd runs a command (in ns unless nil) to completion and returns its
// standard output; the error carries standard error.
func (r *runner) cmd(ns *harness.NS, timeout time.Duration, args ...string) (string, error) {
	return r.cmdIn(ns, timeout, "", args...)
}

func (r *runner) cmdIn(ns *harness.NS, timeout time.Duration, stdin string, args ...string) (string, error) {
	return ns.Run(r.ctx, harness.Exec{Args: args, Stdin: stdin, Timeout: timeout})
}

// start runs args in ns in its own process group (a Ctrl-C at the
// terminal reaches only the harness, which then stops everything in
// order). stopSig is what asks it to exit cleanly.
func (r *runner) start(ns *harness.NS, name string, stopSig syscall.Signal, stdin string, args ...string) (*harness.Proc, error) {
	p, err := ns.Start(r, benchProc(name, stopSig, stdin, args...))
	if err != nil {
		return nil, err
	}
	r.track(p)
	return p, nil
}

// benchProc is how the bench runs its processes: in a process group of
// their own, errors quoting the last 15 lines of output.
func benchProc(name string, stopSig syscall.Signal, stdin string, args ...string) harness.ProcSpec {
	return harness.ProcSpec{Name: name, Args: args, Stdin: stdin, StopSignal: stopSig, OwnGroup: true, Tail: 15}
}

// track adds p to the processes whose logs and exits the run watches.
func (r *runner) track(p *harness.Proc) {
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
}

// procsSince returns the processes started after the first n.
func (r *runner) procsSince(n int) []*harness.Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*harness.Proc(nil), r.procs[n:]...)
}

func (r *runner) procCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.procs)
}

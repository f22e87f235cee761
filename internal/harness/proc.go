//go:build linux

package harness

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcSpec says how NS.Start runs a long-lived command.
type ProcSpec struct {
	Name  string // for messages
	Args  []string
	Stdin string
	// StopSignal asks the process to exit cleanly (SIGTERM if 0): the
	// cleanup Start registers sends it and kills the process 5 s later
	// (Stop).
	StopSignal syscall.Signal
	// OwnGroup starts the process in a process group of its own: a
	// Ctrl-C at the terminal then reaches only the caller (which stops
	// everything in order), and Stop's SIGKILL the whole group.
	OwnGroup bool
	// Tail is how many last lines of the output the errors of WaitFor
	// and WaitLog quote (0: all of it).
	Tail int
}

// Proc is a process started in a namespace, with its standard output and
// standard error captured in Out.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Out  Output

	group bool
	tail  int
	done  chan struct{}
	err   error // what Cmd.Wait returned, once done is closed
}

// Start launches s in the namespace. It dies with the caller (SIGKILL
// when the thread that started it ends), and c's cleanup stops it with
// s.StopSignal and a 5 s grace.
func (n *NS) Start(c Cleaner, s ProcSpec) (*Proc, error) {
	p := &Proc{Name: s.Name, group: s.OwnGroup, tail: s.Tail, done: make(chan struct{})}
	p.Cmd = exec.Command("ip", append([]string{"netns", "exec", n.Name}, s.Args...)...)
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: s.OwnGroup, Pdeathsig: syscall.SIGKILL}
	p.Cmd.Stdout, p.Cmd.Stderr = &p.Out, &p.Out
	p.Cmd.Stdin = strings.NewReader(s.Stdin)
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", s.Name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	sig := s.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	c.Cleanup(func() { p.Stop(sig, 5*time.Second) })
	return p, nil
}

// Done is closed when the process has exited and all its output is in
// Out.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether Done is closed.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is what waiting for the process returned (nil for exit code 0, an
// *exec.ExitError for another); nil while it runs.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Stop sends sig and waits for the process to exit. After grace it kills
// the process (its whole group, with OwnGroup) and waits 5 s more.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	if p.Exited() {
		return
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	if p.group {
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	} else {
		p.Cmd.Process.Kill()
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// WaitFor waits until the output matches re and returns the match.
func (p *Proc) WaitFor(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	return p.wait(ctx, "/"+re.String()+"/", re.FindStringSubmatch, timeout)
}

// WaitLog waits until the output contains s.
func (p *Proc) WaitLog(ctx context.Context, s string, timeout time.Duration) error {
	_, err := p.wait(ctx, strconv.Quote(s), func(out string) []string {
		if strings.Contains(out, s) {
			return []string{s}
		}
		return nil
	}, timeout)
	return err
}

// wait polls the output every 50 ms until match finds what it seeks, the
// process exits, the timeout passes or ctx ends.
func (p *Proc) wait(ctx context.Context, what string, match func(string) []string, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited() // first: then the output holds all it wrote
		out := p.Out.String()
		if m := match(out); m != nil {
			return m, nil
		}
		if exited {
			return nil, fmt.Errorf("%s exited (%v) before logging %s:\n%s", p.Name, p.err, what, Tail(out, p.tail))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not log %s within %s:\n%s", p.Name, what, timeout, Tail(out, p.tail))
		}
		if err := Sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

//go:build linux

package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// NS is a network namespace made by NewNS. A nil *NS stands for the
// host's namespace where a method says so (Run).
type NS struct {
	Name string
	ino  uint64 // the namespace's inode, to find the processes in it
}

// NewNS creates the namespace prefix-<6 hex digits> with loopback up and
// resolv as its own resolv.conf (/etc/netns/<name>/resolv.conf), so that
// a program run there with `ip netns exec` that edits /etc/resolv.conf
// edits that file, never the host's. c's cleanup deletes it (Delete),
// also when NewNS fails half-way.
func NewNS(ctx context.Context, c Cleaner, prefix, resolv string) (*NS, error) {
	n := &NS{Name: prefix + "-" + RandHex(3)}
	c.Cleanup(func() {
		if err := n.Delete(); err != nil {
			c.Logf("warning: %v", err)
		}
	})
	if err := os.MkdirAll(n.etc(), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.ResolvConf(), []byte(resolv), 0o644); err != nil {
		return nil, err
	}
	var host *NS
	if _, err := host.Run(ctx, Exec{Args: []string{"ip", "netns", "add", n.Name}}); err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", n.Name), &st); err != nil {
		return nil, fmt.Errorf("namespace %s: %v", n.Name, err)
	}
	n.ino = st.Ino
	if _, err := n.Run(ctx, Exec{Args: []string{"ip", "link", "set", "lo", "up"}}); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *NS) etc() string { return filepath.Join("/etc/netns", n.Name) }

// ResolvConf is the file a program in the namespace sees as
// /etc/resolv.conf.
func (n *NS) ResolvConf() string { return filepath.Join(n.etc(), "resolv.conf") }

// Delete kills whatever still runs in the namespace (Kill), deletes it
// and its /etc/netns directory. Only Kill's error is returned: deleting
// a namespace that was never made fails, as it should, silently.
func (n *NS) Delete() error {
	err := n.Kill()
	exec.Command("ip", "netns", "del", n.Name).Run()
	os.RemoveAll(n.etc())
	return err
}

// Pids lists the processes in the namespace: all of them were started by
// the caller, directly or as their children.
func (n *NS) Pids() []int {
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

// Kill kills whatever still runs in the namespace (say ocserv's workers
// or a vpnc-script) with SIGKILL, trying for 2 s.
func (n *NS) Kill() error {
	if n.ino == 0 {
		return nil
	}
	for i := 0; i < 40; i++ {
		pids := n.Pids()
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			if p != os.Getpid() {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pids := n.Pids(); len(pids) > 0 {
		return fmt.Errorf("processes %v still in namespace %s", pids, n.Name)
	}
	return nil
}

// Exec is a command for Run.
type Exec struct {
	Args  []string
	Stdin string
	// Timeout bounds the run (0: only ctx does).
	Timeout time.Duration
	// Combined makes the output standard output and standard error
	// together, as written, and the error exec's own (an *exec.ExitError
	// for an exit code), as from exec.Cmd.CombinedOutput. Without it the
	// output is standard output alone, and the error names the whole
	// command line and quotes the last 8 lines of both.
	Combined bool
}

// Run runs e to completion in the namespace (on the host if n is nil) in
// a process group of its own, and returns its output.
func (n *NS) Run(ctx context.Context, e Exec) (string, error) {
	args := e.Args
	if n != nil {
		args = append([]string{"ip", "netns", "exec", n.Name}, args...)
	}
	if e.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.Timeout)
		defer cancel()
	}
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = 2 * time.Second
	c.Stdin = strings.NewReader(e.Stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if e.Combined {
		c.Stderr = &out
	}
	err := c.Run()
	if err == nil {
		return out.String(), nil
	}
	if e.Combined {
		return out.String(), err
	}
	if e.Timeout > 0 && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", e.Timeout)
	}
	return out.String(), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(Tail(errb.String()+out.String(), 8)))
}

// End is one end of a veth pair for Link: device Dev in namespace NS
// with address Addr (CIDR, IPv4 or IPv6).
type End struct {
	NS        *NS
	Dev, Addr string
}

// Link joins two namespaces with a veth pair, addresses both ends and
// brings them up. c's cleanup deletes the pair if it is still on the
// host (otherwise it goes with either namespace).
func Link(ctx context.Context, c Cleaner, a, b End) error {
	var host *NS
	c.Cleanup(func() {
		host.Run(context.Background(), Exec{Args: []string{"ip", "link", "del", a.Dev}, Timeout: 5 * time.Second})
	})
	steps := [][]string{
		{"ip", "link", "add", a.Dev, "type", "veth", "peer", "name", b.Dev},
		{"ip", "link", "set", a.Dev, "netns", a.NS.Name},
		{"ip", "link", "set", b.Dev, "netns", b.NS.Name},
	}
	for _, e := range []End{a, b} {
		add := []string{"ip", "-n", e.NS.Name, "addr", "add", e.Addr, "dev", e.Dev}
		if strings.Contains(e.Addr, ":") {
			// IPv6: skip duplicate address detection, so the address is
			// usable at once instead of "tentative" for a second or more.
			add = append(add, "nodad")
		}
		steps = append(steps, add, []string{"ip", "-n", e.NS.Name, "link", "set", e.Dev, "up"})
	}
	for _, s := range steps {
		if _, err := host.Run(ctx, Exec{Args: s}); err != nil {
			return err
		}
	}
	return nil
}

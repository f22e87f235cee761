//go:build linux

// Command kvpnbench is kvpn's benchmark harness, run by `make bench`.
//
// In fresh network namespaces on this machine it measures, with iperf3,
// single-stream and 4-stream TCP throughput both ways (several
// repetitions: median and min-max), CPU seconds per GB of each end's VPN
// processes, the 64-byte UDP packet rate and ping latency through an idle
// and a loaded tunnel, for:
//
//	veth          raw veth between two namespaces (baseline)
//	kvpn-dtls     vpnd + vpnc over DTLS (the default transport)
//	kvpn-tls      vpnd + vpnc --no-dtls (TLS; the record layer engine is logged)
//	kvpn-plain    vpnd tun-backend = "plain" + vpnc --tun-backend plain, DTLS
//	ocserv-dtls   stock ocserv + openconnect, DTLS
//	ocserv-tls    stock ocserv + openconnect --no-dtls
//	oc-vpnd-dtls  stock openconnect against vpnd, DTLS
//	oc-vpnd-tls   stock openconnect --no-dtls against vpnd
//	ocserv-legacy   stock ocserv + openconnect --dtls-ciphers=OC-DTLS1_2-AES128-GCM
//	                (AnyConnect legacy DTLS 1.2, master-secret resumption)
//	oc-vpnd-legacy  the same openconnect against vpnd (ratio to ocserv-legacy)
//
// It prints the tables (with ratios to raw veth and to ocserv on the same
// transport) and replaces the generated section of docs/performance.md
// (between <!-- bench:begin --> and <!-- bench:end -->).
//
// Knobs (environment; the flags of the same name win):
//
//	BENCH_TIME=5     seconds per iperf3 run (-time)
//	BENCH_REPS=3     repetitions of every measurement (-reps)
//	BENCH_CASES=...  comma list of cases (or groups kvpn, ocserv, oc-vpnd, legacy) (-cases)
//	BENCH_QUICK=1    smoke test: 1 s, 1 repetition, docs untouched unless BENCH_OUT is set (-quick)
//	BENCH_BIN=bin    where vpnd and vpnc are (-bin)
//	BENCH_OUT=docs/performance.md  docs file to update, "-" for none (-out)
//	BENCH_DEBUG=1    print the VPN processes' last log lines after each case
//
// Needs root. Traffic never leaves the namespaces it creates. Namespaces,
// their /etc/netns directories, every process it started and its
// temporary files are removed at the end of each case, on failure, and on
// SIGINT/SIGTERM/SIGHUP (a second signal skips the graceful part).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"kvpn/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	s, err := bench.LoadSettings(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print("usage: kvpnbench [flags] (as root; normally via make bench)\n\n" + bench.EnvHelp)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvpnbench: %v\n", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "kvpnbench: needs root (make bench)")
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newRunner(ctx, s)
	defer r.unwindAll()

	// First signal: stop measuring and clean up in order. A second one,
	// or a cleanup that hangs, cleans up from here and exits.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		r.logf("caught %v: stopping and cleaning up (again to force)", sig)
		cancel()
		select {
		case <-sigs:
		case <-time.After(60 * time.Second):
		}
		r.logf("forced cleanup")
		r.unwindAll()
		os.Exit(130)
	}()

	if err := r.preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "kvpnbench: %v\n", err)
		return 1
	}

	rep := &bench.Report{
		Settings: s,
		Machine:  machine(),
		Command:  bench.CommandLine(s.Env, os.Getenv("MAKELEVEL") != "", os.Args),
		Started:  time.Now(),
	}
	r.logf("%s; %d s per run, %d repetition(s); cases %s", rep.Machine.CPU, int(s.Time/time.Second), s.Reps, strings.Join(s.Cases, ","))
	failed := 0
	for _, name := range s.Cases {
		if ctx.Err() != nil {
			break
		}
		info, _ := bench.LookupCase(name)
		c := r.runCase(info)
		if ctx.Err() != nil {
			break
		}
		if c.Err != "" {
			failed++
		}
		rep.Cases = append(rep.Cases, c)
	}
	rep.Elapsed = time.Since(rep.Started)
	var sess *bench.SessionsReport
	if ctx.Err() == nil && (s.OCClients > 0 || len(s.Sessions) > 0) {
		sess = r.runSessions(rep.Machine, rep.Command)
		for _, c := range sess.Clients {
			if c.Err != "" {
				failed++
			}
		}
		for _, l := range sess.Loads {
			if l.Err != "" {
				failed++
			}
		}
	}
	if ctx.Err() != nil {
		r.unwindAll()
		fmt.Fprintln(os.Stderr, "kvpnbench: interrupted; everything cleaned up, docs not written")
		return 130
	}

	fmt.Println()
	if len(rep.Cases) > 0 {
		fmt.Print(rep.Tables())
	}
	if sess != nil {
		fmt.Print(sess.Tables())
	}
	if s.Out != "" {
		if len(rep.Cases) > 0 {
			if err := writeDocs(s.Out, bench.BeginMarker, bench.EndMarker, bench.NewDoc, rep.Section()); err != nil {
				fmt.Fprintf(os.Stderr, "kvpnbench: %v\n", err)
				return 1
			}
			r.logf("wrote the generated section of %s", s.Out)
		}
		if sess != nil {
			// The sessions section lives in docs/scaling.md beside it.
			out := filepath.Join(filepath.Dir(s.Out), "scaling.md")
			if err := writeDocs(out, bench.SessionsBeginMarker, bench.SessionsEndMarker, "# Scaling\n", sess.Section()); err != nil {
				fmt.Fprintf(os.Stderr, "kvpnbench: %v\n", err)
				return 1
			}
			r.logf("wrote the sessions section of %s", out)
		}
	} else {
		r.logf("docs not written (quick run or BENCH_OUT=-; set BENCH_OUT=docs/performance.md to write them)")
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "kvpnbench: %d case(s) failed\n", failed)
		return 1
	}
	return 0
}

// preflight checks the tools the selected cases need.
func (r *runner) preflight() error {
	need := map[string]bool{"ip": true, "ss": true, "ping": true, "iperf3": true}
	kvpn := false
	for _, n := range r.s.Cases {
		switch {
		case strings.HasPrefix(n, "kvpn"):
			kvpn = true
		case strings.HasPrefix(n, "ocserv"):
			need["ocserv"], need["ocpasswd"], need["openconnect"] = true, true, true
		case strings.HasPrefix(n, "oc-vpnd"):
			kvpn = true
			need["openconnect"] = true
		}
	}
	if r.s.OCClients > 0 || len(r.s.Sessions) > 0 {
		kvpn = true
		need["ocserv"], need["ocpasswd"] = true, true
	}
	if r.s.OCClients > 0 {
		need["openconnect"] = true
	}
	var missing []string
	for c := range need {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if need["openconnect"] {
		if _, err := os.Stat(vpncScript); err != nil {
			missing = append(missing, vpncScript+" (vpnc-scripts)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (make deps installs them)", strings.Join(missing, ", "))
	}
	if kvpn {
		bins := []string{"vpnd", "vpnc"}
		if len(r.s.Sessions) > 0 {
			bins = append(bins, "kvpnload")
		}
		for _, b := range bins {
			p, err := filepath.Abs(filepath.Join(r.s.Bin, b))
			if err != nil {
				return err
			}
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("%s: %v (make build, or BENCH_BIN=DIR)", p, err)
			}
			switch b {
			case "vpnd":
				r.vpnd = p
			case "vpnc":
				r.vpnc = p
			default:
				r.kvpnload = p
			}
		}
	}
	return nil
}

// machine describes this machine for the docs.
func machine() bench.Machine {
	m := bench.Machine{NProc: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	for _, t := range [][]string{{"iperf3", "--version"}, {"ocserv", "--version"}, {"openconnect", "--version"}} {
		out, _ := exec.Command(t[0], t[1:]...).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				m.Tools = append(m.Tools, line)
				break
			}
		}
	}
	return m
}

// writeDocs replaces the generated section of path (creating the file
// around an empty section if it does not exist), atomically.
func writeDocs(path, begin, end, newDoc, section string) error {
	doc := newDoc
	if b, err := os.ReadFile(path); err == nil {
		doc = string(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	out, err := bench.ReplaceMarked(doc, begin, end, section)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".performance-*.md")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(out); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

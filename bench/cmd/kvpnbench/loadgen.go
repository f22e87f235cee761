//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvpn/bench"
	"kvpn/internal/harness"
	"kvpn/loadgen"
)

// The kvpnload part of the sessions benchmark: one generator process in
// the client namespace holds N sessions against vpnd (one user, no session
// limits), then a run of trafficSessions sessions sends echo requests;
// ocserv gets the same at the largest count this machine holds for it.

const (
	loadUser        = "load"
	trafficSessions = 100
	trafficPPS      = 500
	trafficSize     = 1200
	trafficHold     = 10 * time.Second
	idleSettle      = 8 * time.Second // past the DTLS feed window (5 s) and a GC cycle
	idleWindow      = 10 * time.Second
	// ocservMaxSessions bounds the generator's runs against ocserv: a
	// worker process per session, about 6 MiB RSS each.
	ocservMaxSessions = 1000
	loadPerProcess    = 5000
)

// progressLine is kvpnload's once-a-second line.
var progressLine = regexp.MustCompile(`up (\d+)/(\d+)\s+logging in (\d+)\s+dtls (\d+)\s+failed (\d+)`)

// runLoad runs kvpnload with n sessions against server; traffic selects
// the traffic run.
func (r *runner) runLoad(server string, n int, traffic bool) *bench.LoadRun {
	run := &bench.LoadRun{Server: server, Sessions: n, Traffic: traffic}
	if traffic {
		run.PPS, run.Size = trafficPPS, trafficSize
	}
	what := "idle"
	if traffic {
		what = fmt.Sprintf("each sending %d x %d B/s", trafficPPS, trafficSize)
	}
	r.logf("== sessions: kvpnload, %d sessions (%s) against %s", n, what, server)
	run.Err = r.measurePart(server, func() error { return r.measureLoad(run) })
	return run
}

func (r *runner) measureLoad(run *bench.LoadRun) error {
	t, err := r.newTopo("load-" + run.Server)
	if err != nil {
		return err
	}
	spec := serverSpec{users: []string{loadUser}, unlimited: true}
	var pin, comm string
	switch run.Server {
	case "vpnd":
		spec.pool = vpndBigPool
		srv, err := r.startVpnd(t, spec)
		if err != nil {
			return err
		}
		pin, comm = srv.pin, "vpnd"
	case "ocserv":
		spec.pool = ocservBigPool
		srv, err := r.startOcserv(t, spec)
		if err != nil {
			return err
		}
		pin, comm = srv.pin, "ocserv"
	default:
		return fmt.Errorf("unknown server %q", run.Server)
	}
	if err := r.sleep(time.Second); err != nil {
		return err
	}
	rss0, pss0 := memory(t.srv, comm)
	pwFile := filepath.Join(t.dir, "load-password")
	if err := os.WriteFile(pwFile, []byte(benchPass+"\n"), 0o600); err != nil {
		return err
	}
	// One generator holds at most loadPerProcess sessions: each takes a
	// TCP and a UDP socket, and RLIMIT_NOFILE's hard limit (20000 here,
	// not raisable without CAP_SYS_RESOURCE) bounds one process.
	procs := (run.Sessions + loadPerProcess - 1) / loadPerProcess
	var gens []*harness.Proc
	var jsons []string
	for i := range procs {
		n := run.Sessions / procs
		if i < run.Sessions%procs {
			n++
		}
		jsonPath := filepath.Join(t.dir, fmt.Sprintf("load-%d.json", i))
		args := []string{r.kvpnload, "--servercert", pin, "-u", loadUser, "--password-file", pwFile,
			"--sessions", strconv.Itoa(n), "--parallel", strconv.Itoa(64 / procs), "--json", jsonPath}
		if run.Traffic {
			args = append(args, "--pps", strconv.Itoa(run.PPS), "--size", strconv.Itoa(run.Size))
		}
		args = append(args, "https://"+srvVeth+":443/")
		lg, err := r.start(t.cli, fmt.Sprintf("kvpnload %d", i), syscall.SIGINT, "", args...)
		if err != nil {
			return err
		}
		gens, jsons = append(gens, lg), append(jsons, jsonPath)
	}
	// The ramp: until every session is up or failed, or nothing has moved
	// for 60 s.
	last := ""
	lastChange := time.Now()
	for {
		var up, loggingIn, dtls, failed int
		seen := 0
		for _, lg := range gens {
			if lg.Exited() {
				return fmt.Errorf("kvpnload exited (%v): %s", lg.Err(), harness.Tail(lg.Out.String(), 10))
			}
			all := progressLine.FindAllStringSubmatch(lg.Out.String(), -1)
			if len(all) == 0 {
				continue
			}
			seen++
			cur := all[len(all)-1]
			for j, dst := range []*int{&up, nil, &loggingIn, &dtls, &failed} {
				if dst != nil {
					v, _ := strconv.Atoi(cur[j+1])
					*dst += v
				}
			}
		}
		if seen == len(gens) {
			cur := fmt.Sprintf("up %d/%d, logging in %d, dtls %d, failed %d", up, run.Sessions, loggingIn, dtls, failed)
			if cur != last {
				last, lastChange = cur, time.Now()
			}
			if loggingIn == 0 && up+failed >= run.Sessions && (dtls == up || time.Since(lastChange) > 15*time.Second) {
				break
			}
		}
		if time.Since(lastChange) > 60*time.Second {
			run.Notes = append(run.Notes, fmt.Sprintf("%s, %d sessions: the ramp stalled at %s", run.Server, run.Sessions, last))
			break
		}
		if err := r.sleep(200 * time.Millisecond); err != nil {
			return err
		}
	}
	if run.Traffic {
		t0, rx0 := cpuTicks(t.srv, comm), r.rxBytes(t.srv)
		if err := r.sleep(trafficHold); err != nil {
			return err
		}
		run.ServerCPU = 100 * r.cpuSeconds(t0, cpuTicks(t.srv, comm)) / trafficHold.Seconds()
		run.Mbps = float64(r.rxBytes(t.srv)-rx0) * 8 / 1e6 / trafficHold.Seconds()
	} else {
		if err := r.sleep(idleSettle); err != nil {
			return err
		}
		t0 := cpuTicks(t.srv, comm)
		if err := r.sleep(idleWindow); err != nil {
			return err
		}
		run.IdleCPU = 100 * r.cpuSeconds(t0, cpuTicks(t.srv, comm)) / idleWindow.Seconds()
	}
	rss1, pss1 := memory(t.srv, comm)
	for _, lg := range gens {
		lg.Cmd.Process.Signal(syscall.SIGINT) // all at once; stop below waits
	}
	run.Failures = map[string]uint64{}
	var lgRSS float64
	for i, lg := range gens {
		lg.Stop(syscall.SIGINT, 120*time.Second)
		b, err := os.ReadFile(jsons[i])
		if err != nil {
			return fmt.Errorf("kvpnload wrote no summary: %v\n%s", err, harness.Tail(lg.Out.String(), 10))
		}
		var s loadgen.Summary
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("kvpnload summary: %v", err)
		}
		// Processes ramp side by side: their rates add; of the
		// percentiles the worst process's is kept.
		run.Up += s.UpAtEnd
		run.DTLS += s.DTLSUpAtEnd
		run.LoginsPerS += s.LoginsPerSec
		run.Ramp = max(run.Ramp, time.Duration(s.RampSeconds*float64(time.Second)))
		run.LoginP50, run.LoginP99 = max(run.LoginP50, s.Login.P50), max(run.LoginP99, s.Login.P99)
		run.DTLSP50, run.DTLSP99 = max(run.DTLSP50, s.DTLS.P50), max(run.DTLSP99, s.DTLS.P99)
		for k, v := range s.Failures {
			run.Failures[k] += v
		}
		lgRSS += float64(s.RSSBytes)
	}
	if procs > 1 {
		run.Notes = append(run.Notes, fmt.Sprintf("%s, %d sessions: %d kvpnload processes side by side (RLIMIT_NOFILE); percentiles are the worst process's",
			run.Server, run.Sessions, procs))
	}
	if run.Up > 0 {
		run.RSSPerSess = float64(rss1-rss0) / float64(run.Up)
		run.PSSPerSess = float64(pss1-pss0) / float64(run.Up)
		run.LoadgenKiB = lgRSS / 1024 / float64(run.Up)
	}
	r.logf("   up %d (DTLS %d), %.0f logins/s, server RSS %s per session, idle CPU %.1f %%, failures %v",
		run.Up, run.DTLS, run.LoginsPerS, bench.FormatBytes(run.RSSPerSess), run.IdleCPU, run.Failures)
	return nil
}

// rxBytes is what the namespace's interfaces other than lo received
// (/proc/net/dev): the tunnel's traffic as it arrives at the server.
func (r *runner) rxBytes(ns *harness.NS) int64 {
	out, err := r.cmd(ns, 5*time.Second, "cat", "/proc/net/dev")
	if err != nil {
		return 0
	}
	var total int64
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		if f := strings.Fields(rest); len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			total += v
		}
	}
	return total
}

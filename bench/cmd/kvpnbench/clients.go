//go:build linux

package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvpn/bench"
	"kvpn/internal/harness"
)

// The openconnect part of the sessions benchmark: N stock openconnect
// clients in script-tun mode (-S: the packets go to a program, here one
// that only sleeps, so no TUN device per client), all started at once
// from the client namespace's one address, as users behind an office NAT,
// against vpnd and then against ocserv with the same users.

// Pools large enough for every client; the servers' tunnel addresses stay
// those of the one-tunnel cases.
const (
	vpndBigPool   = "10.203.0.0/16"
	ocservBigPool = "10.204.0.0/16"
	ocScriptTun   = "exec sleep 86400"
	// vpndOcpasswd is vpnd reading the password file ocserv's ocpasswd
	// wrote (sha-crypt hashes, as users bring it from ocserv) instead of
	// its own argon2id one.
	vpndOcpasswd = "vpnd (ocpasswd file)"
)

var (
	ocDTLSUp     = regexp.MustCompile(`Established DTLS connection`)
	ocDTLSFailed = regexp.MustCompile(`DTLS handshake failed[^\n]*`)
)

// runClients measures one server ("vpnd" or "ocserv") with n clients.
func (r *runner) runClients(server string, n int) *bench.ClientRun {
	run := &bench.ClientRun{Server: server, Clients: n}
	r.logf("== sessions: %d stock openconnect clients (script-tun) against %s", n, server)
	run.Err = r.measurePart(server, func() error { return r.measureClients(run) })
	return run
}

// measurePart runs measure and cleans up everything it set up; it
// returns the first line of its error ("" if none).
func (r *runner) measurePart(server string, measure func() error) string {
	m := r.mark()
	defer func() {
		r.unwindTo(m)
		r.logf("   %s: cleaned up", server)
	}()
	if err := measure(); err != nil {
		r.logf("   %s FAILED: %v", server, err)
		return firstLine(err.Error())
	}
	return ""
}

func (r *runner) measureClients(run *bench.ClientRun) error {
	t, err := r.newTopo("clients-" + run.Server)
	if err != nil {
		return err
	}
	users := make([]string, run.Clients)
	for i := range users {
		users[i] = fmt.Sprintf("user%d", i+1)
	}
	r.logf("   writing %d users' passwords", len(users))
	var pin, comm string
	switch run.Server {
	case "vpnd", vpndOcpasswd:
		srv, err := r.startVpnd(t, serverSpec{users: users, pool: vpndBigPool, unlimited: true, ocpasswd: run.Server == vpndOcpasswd})
		if err != nil {
			return err
		}
		pin, comm = srv.pin, "vpnd"
	case "ocserv":
		srv, err := r.startOcserv(t, serverSpec{users: users, pool: ocservBigPool, unlimited: true})
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

	start := time.Now()
	clients := make([]*harness.Proc, len(users))
	for i, u := range users {
		args := []string{"openconnect", "--non-inter", "-u", u, "--passwd-on-stdin", "--servercert", pin,
			"-S", "--script", ocScriptTun, "--reconnect-timeout", "20", "https://" + srvVeth + ":443/"}
		p, err := r.start(t.cli, "openconnect "+u, syscall.SIGINT, benchPass+"\n", args...)
		if err != nil {
			return err
		}
		clients[i] = p
	}
	// Connected: openconnect logs the address it was given.
	up := make([]time.Duration, len(clients))
	deadline := start.Add(120 * time.Second)
	for {
		done := 0
		for i, p := range clients {
			if up[i] == 0 && ocConfigured.MatchString(p.Out.String()) {
				up[i] = time.Since(start)
			}
			if up[i] != 0 || p.Exited() {
				done++
			}
		}
		if done == len(clients) || time.Now().After(deadline) {
			break
		}
		if err := r.sleep(20 * time.Millisecond); err != nil {
			return err
		}
	}
	for _, d := range up {
		if d != 0 {
			run.Connected++
			run.AllUp = max(run.AllUp, d)
		}
	}
	r.logf("   %d of %d connected; the last after %.1f s", run.Connected, run.Clients, run.AllUp.Seconds())
	// DTLS: each client either establishes it or logs a failure; 30 s is
	// longer than openconnect's DTLS attempt period.
	err = harness.Eventually(r.ctx, 30*time.Second, "DTLS on every client", func() error {
		settled := 0
		for _, p := range clients {
			out := p.Out.String()
			if ocDTLSUp.MatchString(out) || ocDTLSFailed.MatchString(out) || p.Exited() {
				settled++
			}
		}
		if settled < len(clients) {
			return fmt.Errorf("%d of %d settled", settled, len(clients))
		}
		return nil
	})
	if err != nil {
		run.Notes = append(run.Notes, err.Error())
	}
	var firstFail string
	for _, p := range clients {
		out := p.Out.String()
		if ocDTLSUp.MatchString(out) {
			run.DTLS++
		} else if f := ocDTLSFailed.FindString(out); f != "" {
			run.DTLSFailed++
			if firstFail == "" {
				firstFail = f
			}
		}
	}
	if firstFail != "" {
		run.Notes = append(run.Notes, fmt.Sprintf("%s: %d clients logged %q", run.Server, run.DTLSFailed, firstFail))
	}
	r.logf("   DTLS on %d of %d (%d failed)", run.DTLS, run.Clients, run.DTLSFailed)
	rss1, pss1 := memory(t.srv, comm)
	if run.Connected > 0 {
		run.RSSPerSess = float64(rss1-rss0) / float64(run.Connected)
		run.PSSPerSess = float64(pss1-pss0) / float64(run.Connected)
	}
	r.logf("   server memory: RSS %s -> %s, PSS %s -> %s (%s RSS per session)", bench.FormatBytes(float64(rss0)),
		bench.FormatBytes(float64(rss1)), bench.FormatBytes(float64(pss0)), bench.FormatBytes(float64(pss1)),
		bench.FormatBytes(run.RSSPerSess))
	if run.Connected < run.Clients {
		for _, p := range clients {
			if !ocConfigured.MatchString(p.Out.String()) {
				run.Notes = append(run.Notes, fmt.Sprintf("%s: a client that did not connect said: %s",
					run.Server, strings.ReplaceAll(harness.Tail(p.Out.String(), 3), "\n", " | ")))
				break
			}
		}
	}
	return nil
}

// memory sums the resident and proportional set sizes (bytes) of the
// namespace's processes whose name starts with prefix: ocserv is a main
// process, sec-mod and one worker per client; PSS splits the pages they
// share.
func memory(n *harness.NS, prefix string) (rss, pss int64) {
	for _, pid := range n.Pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if comm, _, err := bench.ParseStat(string(b)); err != nil || !strings.HasPrefix(comm, prefix) {
			continue
		}
		sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		rss += kbField(string(sm), "Rss:")
		pss += kbField(string(sm), "Pss:")
	}
	return rss, pss
}

// kbField reads "Name:   123 kB" from a /proc file, in bytes.
func kbField(s, name string) int64 {
	for _, line := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v * 1024
			}
		}
	}
	return 0
}

// runSessions runs the sessions part: the openconnect table against vpnd
// and ocserv.
func (r *runner) runSessions(m bench.Machine, command string) *bench.SessionsReport {
	rep := &bench.SessionsReport{Machine: m, Command: command, Started: time.Now()}
	if n := r.s.OCClients; n > 0 {
		for _, server := range []string{"vpnd", vpndOcpasswd, "ocserv"} {
			if r.ctx.Err() != nil {
				break
			}
			rep.Clients = append(rep.Clients, r.runClients(server, n))
		}
	}
	largest := 0
	for _, n := range r.s.Sessions {
		if r.ctx.Err() != nil {
			break
		}
		rep.Loads = append(rep.Loads, r.runLoad("vpnd", n, false))
		largest = max(largest, n)
	}
	if largest > 0 && r.ctx.Err() == nil {
		rep.Loads = append(rep.Loads, r.runLoad("vpnd", trafficSessions, true))
		n := min(largest, ocservMaxSessions)
		if n < largest {
			rep.OcservCap = fmt.Sprintf("kvpnload against ocserv stopped at %d sessions (of %d): ocserv runs a worker process "+
				"per session (about 6 MiB RSS each, see the openconnect table), and a run of that size already "+
				"compares the cost per session", n, largest)
		}
		if r.ctx.Err() == nil {
			rep.Loads = append(rep.Loads, r.runLoad("ocserv", n, false))
		}
		if r.ctx.Err() == nil {
			rep.Loads = append(rep.Loads, r.runLoad("ocserv", trafficSessions, true))
		}
	}
	rep.Elapsed = time.Since(rep.Started)
	return rep
}

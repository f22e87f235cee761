//go:build linux

package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"syscall"
	"time"

	"kvpn/bench"
	"kvpn/internal/harness"
)

// measure runs the throughput repetitions, the pings and the small-packet
// runs of one case.
func (r *runner) measure(c *bench.Case, t *topo, tn *tunnel) error {
	secs := strconv.Itoa(int(r.s.Time / time.Second))
	failures := 0
	var udpData, udpRcvbufErrs [2]int64 // server, client namespace
	badTransport := 0

	// Throughput, repetition-major so drift hits every configuration alike.
	for rep := 1; rep <= r.s.Reps; rep++ {
		for i, cfg := range bench.Configs {
			args := []string{"iperf3", "-c", tn.addr, "-p", iperfPort, "-t", secs, "-J", "--connect-timeout", "5000"}
			if cfg.Streams > 1 {
				args = append(args, "-P", strconv.Itoa(cfg.Streams))
			}
			if cfg.Reverse {
				args = append(args, "-R")
			}
			srv0, cli0 := r.udpCounters(t.srv), r.udpCounters(t.cli)
			var s0, c0 map[int]uint64
			if tn.srvComm != "" {
				s0, c0 = cpuTicks(t.srv, tn.srvComm), cpuTicks(t.cli, tn.cliComm)
			}
			res, err := r.iperf(t.cli, args)
			var s1, c1 map[int]uint64
			if tn.srvComm != "" {
				s1, c1 = cpuTicks(t.srv, tn.srvComm), cpuTicks(t.cli, tn.cliComm)
			}
			srv1, cli1 := r.udpCounters(t.srv), r.udpCounters(t.cli)
			if err != nil {
				if r.ctx.Err() != nil {
					return err
				}
				failures++
				c.Notes = append(c.Notes, fmt.Sprintf("%s run %d failed: %s", cfg, rep, firstLine(err.Error())))
				r.logf("   %-12s rep %d: FAILED: %v", cfg, rep, err)
				if failures >= 3 {
					return fmt.Errorf("3 iperf3 runs failed; last: %v", err)
				}
				continue
			}
			run := bench.TCPRun{Gbps: res.Gbps(), Bytes: res.Bytes, Retransmits: res.Retransmits,
				ServerCPU: math.NaN(), ClientCPU: math.NaN()}
			if tn.srvComm != "" {
				run.ServerCPU, run.ClientCPU = r.cpuSeconds(s0, s1), r.cpuSeconds(c0, c1)
			}
			c.TCP[i] = append(c.TCP[i], run)
			if res.Bytes < 1e6 {
				c.Notes = append(c.Notes, fmt.Sprintf("%s run %d moved almost nothing (%d bytes)", cfg, rep, res.Bytes))
			}

			// Did the data go where the case says?
			dgrams := delta(srv0, srv1, "InDatagrams") + delta(srv0, srv1, "OutDatagrams")
			udpData[0] += dgrams
			udpRcvbufErrs[0] += delta(srv0, srv1, "RcvbufErrors")
			udpRcvbufErrs[1] += delta(cli0, cli1, "RcvbufErrors")
			// With UDP GSO (vpnd, vpnc) the sender's counter counts one
			// datagram per send of up to 64 segments; the receiver, without
			// UDP_GRO, counts every segment. So a DTLS run must show at
			// least one datagram per 64 full-size packets.
			expect := res.Bytes / (1500 * 64)
			switch c.Transport {
			case "dtls":
				if dgrams < expect/2 {
					badTransport++
					c.Notes = append(c.Notes, fmt.Sprintf("TRANSPORT CHECK FAILED: %s run %d moved %d bytes but only %d UDP datagrams passed the server (DTLS not carrying the data?)", cfg, rep, res.Bytes, dgrams))
				}
			case "tls":
				if dgrams > 10 {
					badTransport++
					c.Notes = append(c.Notes, fmt.Sprintf("TRANSPORT CHECK FAILED: %s run %d: %d UDP datagrams on a TLS-only tunnel", cfg, rep, dgrams))
				}
			}
			msg := fmt.Sprintf("   %-12s rep %d: %6.2f Gbit/s", cfg, rep, run.Gbps)
			if tn.srvComm != "" {
				msg += fmt.Sprintf("  cpu/GB server %s s, client %s s", bench.FormatSummary(bench.Summarize([]float64{bench.CPUPerGB(run.ServerCPU, run.Bytes)}), 2),
					bench.FormatSummary(bench.Summarize([]float64{bench.CPUPerGB(run.ClientCPU, run.Bytes)}), 2))
			}
			if c.Transport == "dtls" {
				msg += fmt.Sprintf("  (%d UDP datagrams)", dgrams)
			}
			r.logf("%s", msg)
		}
	}
	if c.Transport != "" && badTransport == 0 {
		what := "no UDP during the throughput runs"
		if c.Transport == "dtls" {
			what = fmt.Sprintf("%d UDP datagrams passed the server during the throughput runs", udpData[0])
		}
		c.Notes = append(c.Notes, "transport check passed: "+what)
	}
	if udpRcvbufErrs[0]+udpRcvbufErrs[1] > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("UDP receive-buffer overflows during the throughput runs: server %d, client %d", udpRcvbufErrs[0], udpRcvbufErrs[1]))
	}

	// Latency: idle, then under a single-stream upload.
	if p, err := r.ping(t, tn.addr); err != nil {
		c.Notes = append(c.Notes, "idle ping failed: "+firstLine(err.Error()))
	} else {
		c.PingIdle = p
		r.logf("   ping idle: avg %.3f ms, max %.3f ms, %d/%d received", p.Avg, p.Max, p.Received, p.Transmitted)
	}
	for rep := 1; rep <= r.s.Reps; rep++ {
		for d, reverse := range []bool{false, true} {
			dir := [2]string{"→", "←"}[d]
			p, err := r.loadedPing(t, tn.addr, reverse)
			if err != nil {
				if r.ctx.Err() != nil {
					return err
				}
				c.Notes = append(c.Notes, fmt.Sprintf("loaded ping %s run %d failed: %s", dir, rep, firstLine(err.Error())))
				continue
			}
			c.Loaded[d] = append(c.Loaded[d], *p)
			r.logf("   ping loaded %s rep %d: avg %.3f ms, max %.3f ms, %d/%d received", dir, rep, p.Avg, p.Max, p.Received, p.Transmitted)
		}
	}

	// Small packets last: a flood may knock a DTLS channel over.
	for rep := 1; rep <= r.s.Reps; rep++ {
		for d, reverse := range []bool{false, true} {
			args := []string{"iperf3", "-c", tn.addr, "-p", iperfPort, "-t", secs, "-J", "--connect-timeout", "5000",
				"-u", "-l", "64", "-b", "0"}
			dir := "→"
			if reverse {
				args = append(args, "-R")
				dir = "←"
			}
			res, err := r.iperf(t.cli, args)
			if err != nil {
				if r.ctx.Err() != nil {
					return err
				}
				c.Notes = append(c.Notes, fmt.Sprintf("UDP 64 B %s run %d failed: %s", dir, rep, firstLine(err.Error())))
				r.logf("   UDP 64 B %s rep %d: FAILED: %v", dir, rep, err)
				continue
			}
			c.UDP[d] = append(c.UDP[d], bench.UDPRun{PPS: res.PPS(), LossPct: res.LossPct()})
			r.logf("   UDP 64 B %s rep %d: %.0f pkt/s received, %.1f %% lost (%d sent)", dir, rep, res.PPS(), res.LossPct(), res.SentPackets)
		}
	}
	return nil
}

func delta(a, b map[string]int64, k string) int64 {
	if a == nil || b == nil {
		return 0
	}
	return b[k] - a[k]
}

// iperf runs an iperf3 client in the client namespace and parses its
// JSON; a busy server is retried.
func (r *runner) iperf(ns *harness.NS, args []string) (bench.Iperf, error) {
	timeout := r.s.Time + 40*time.Second
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		out, runErr := r.cmd(ns, timeout, args...)
		var res bench.Iperf
		res, err = bench.ParseIperf([]byte(out))
		if err == nil {
			return res, nil
		}
		if r.ctx.Err() != nil {
			return res, r.ctx.Err()
		}
		if out == "" && runErr != nil {
			err = runErr
		}
		if !errors.Is(err, bench.ErrIperfBusy) {
			return res, err
		}
		if e := r.sleep(time.Second); e != nil {
			return res, e
		}
	}
	return bench.Iperf{}, err
}

// ping runs `ping -c 20 -i 0.05` from the client namespace.
func (r *runner) ping(t *topo, addr string) (*bench.Ping, error) {
	out, err := r.cmd(t.cli, 30*time.Second, "ping", "-c", "20", "-i", "0.05", "-W", "2", "-q", addr)
	p, perr := bench.ParsePing(out)
	if perr != nil {
		if err != nil {
			return nil, err
		}
		return nil, perr
	}
	return &p, nil
}

// loadedPing pings while a single-stream iperf3 runs, client to server
// or (reverse) server to client.
func (r *runner) loadedPing(t *topo, addr string, reverse bool) (*bench.Ping, error) {
	args := []string{"iperf3", "-c", addr, "-p", iperfPort, "-t", "5", "-J", "--connect-timeout", "5000"}
	if reverse {
		args = append(args, "-R")
	}
	load, err := r.start(t.cli, "iperf3 load", syscall.SIGTERM, "", args...)
	if err != nil {
		return nil, err
	}
	if err := r.sleep(time.Second); err != nil {
		return nil, err
	}
	if load.Exited() {
		return nil, fmt.Errorf("load iperf3 ended early: %s", harness.Tail(load.Out.String(), 5))
	}
	out, err := r.cmd(t.cli, 30*time.Second, "ping", "-c", "100", "-i", "0.02", "-W", "2", "-q", addr)
	var p *bench.Ping
	if pp, perr := bench.ParsePing(out); perr == nil {
		p, err = &pp, nil // as ping: its summary counts, not its exit code
	} else if err == nil {
		err = perr
	}
	select {
	case <-load.Done():
	case <-time.After(20 * time.Second):
		load.Stop(syscall.SIGTERM, 2*time.Second)
	case <-r.ctx.Done():
		return nil, r.ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	// The pings are what counts; the load was running when they started.
	if res, perr := bench.ParseIperf([]byte(load.Out.String())); perr == nil && res.Gbps() <= 0 {
		return nil, errors.New("load iperf3 moved nothing")
	}
	return p, nil
}

// Package bench holds the pure parts of kvpn's benchmark harness
// (bench/cmd/kvpnbench, run by `make bench`): parsers for iperf3's
// JSON output, /proc/PID/stat, /proc/net/snmp and ping's summary, the
// statistics, the result tables with their ratios, the harness settings,
// and the replacement of the generated section of docs/performance.md.
// Nothing here needs root; the unit tests cover all of it.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Iperf is what one iperf3 -J run reports, seen from the receiving end.
type Iperf struct {
	Protocol string // "TCP" or "UDP"
	Streams  int
	Reverse  bool

	// Receiver's view.
	Seconds       float64
	Bytes         int64   // bytes received
	BitsPerSecond float64 // at the receiver

	Retransmits int64 // TCP, sender's count

	// UDP only: Packets is the number the receiver expected (highest
	// sequence number seen), Lost how many of them never arrived.
	Packets, Lost int64
	SentPackets   int64
}

// Gbps is the receiver's throughput in Gbit/s.
func (r Iperf) Gbps() float64 { return r.BitsPerSecond / 1e9 }

// Received is the number of UDP datagrams that arrived.
func (r Iperf) Received() int64 { return r.Packets - r.Lost }

// PPS is the rate of UDP datagrams that arrived, per second of the
// receiver's measurement.
func (r Iperf) PPS() float64 {
	if r.Seconds <= 0 {
		return math.NaN()
	}
	return float64(r.Received()) / r.Seconds
}

// LossPct is the share of UDP datagrams lost, in percent.
func (r Iperf) LossPct() float64 {
	if r.Packets <= 0 {
		return math.NaN()
	}
	return 100 * float64(r.Lost) / float64(r.Packets)
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         int64   `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   int64   `json:"retransmits"`
	Packets       int64   `json:"packets"`
	LostPackets   int64   `json:"lost_packets"`
}

type iperfJSON struct {
	Start struct {
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
			Reverse    int    `json:"reverse"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// ErrIperfBusy is returned by ParseIperf when the server was busy with
// another test (worth a retry).
var ErrIperfBusy = errors.New("iperf3 server busy")

// ParseIperf parses the output of `iperf3 -c ... -J` (TCP or UDP, either
// direction). An "error" in the output is returned as an error.
func ParseIperf(data []byte) (Iperf, error) {
	var j iperfJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Iperf{}, fmt.Errorf("iperf3 output is not JSON: %v", err)
	}
	if j.Error != "" {
		if strings.Contains(j.Error, "busy") {
			return Iperf{}, fmt.Errorf("%w: %s", ErrIperfBusy, j.Error)
		}
		return Iperf{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	if j.End.SumReceived == nil || j.End.SumSent == nil {
		return Iperf{}, errors.New("iperf3 output has no end.sum_sent/sum_received")
	}
	r := Iperf{
		Protocol:      j.Start.TestStart.Protocol,
		Streams:       j.Start.TestStart.NumStreams,
		Reverse:       j.Start.TestStart.Reverse != 0,
		Seconds:       j.End.SumReceived.Seconds,
		Bytes:         j.End.SumReceived.Bytes,
		BitsPerSecond: j.End.SumReceived.BitsPerSecond,
		Retransmits:   j.End.SumSent.Retransmits,
	}
	if r.Protocol == "UDP" {
		r.Packets = j.End.SumReceived.Packets
		r.Lost = j.End.SumReceived.LostPackets
		r.SentPackets = j.End.SumSent.Packets
		if r.Lost < 0 { // iperf3 counts reordering as negative loss at times
			r.Lost = 0
		}
	}
	return r, nil
}

// ParseStat parses the content of /proc/PID/stat: the command name and
// the CPU time the process (all its threads) spent in user and kernel
// mode, utime+stime, in clock ticks. The name is in parentheses and may
// itself hold spaces and parentheses, so the fields are counted from the
// last ')'.
func ParseStat(s string) (comm string, ticks uint64, err error) {
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, fmt.Errorf("malformed stat %q", trunc(s))
	}
	comm = s[open+1 : end]
	// After ")": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
	// flags(9) minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14)
	// stime(15) ...
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return "", 0, fmt.Errorf("stat has %d fields after the name, want at least 13: %q", len(f), trunc(s))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, fmt.Errorf("bad utime/stime in stat %q", trunc(s))
	}
	return comm, ut + st, nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// ParseSNMP returns the counters of one protocol line pair ("Udp",
// "Tcp", ...) of /proc/net/snmp, by name.
func ParseSNMP(s, proto string) (map[string]int64, error) {
	var names []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		if len(f)-1 != len(names) {
			return nil, fmt.Errorf("%s: %d values for %d names", proto, len(f)-1, len(names))
		}
		m := make(map[string]int64, len(names))
		for i, n := range names {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %v", proto, n, err)
			}
			m[n] = v
		}
		return m, nil
	}
	return nil, fmt.Errorf("no %s counters in snmp", proto)
}

// Ping is the summary of one ping run.
type Ping struct {
	Transmitted, Received int
	Min, Avg, Max, Mdev   float64 // ms; NaN when nothing came back
}

var (
	pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingRTT    = regexp.MustCompile(`(?:rtt|round-trip) min/avg/max/(?:mdev|stddev) = ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)
)

// ParsePing parses the summary iputils ping prints at the end.
func ParsePing(out string) (Ping, error) {
	m := pingCounts.FindStringSubmatch(out)
	if m == nil {
		return Ping{}, fmt.Errorf("no ping summary in %q", trunc(out))
	}
	p := Ping{Min: math.NaN(), Avg: math.NaN(), Max: math.NaN(), Mdev: math.NaN()}
	p.Transmitted, _ = strconv.Atoi(m[1])
	p.Received, _ = strconv.Atoi(m[2])
	if r := pingRTT.FindStringSubmatch(out); r != nil {
		p.Min, _ = strconv.ParseFloat(r[1], 64)
		p.Avg, _ = strconv.ParseFloat(r[2], 64)
		p.Max, _ = strconv.ParseFloat(r[3], 64)
		p.Mdev, _ = strconv.ParseFloat(r[4], 64)
	} else if p.Received > 0 {
		return Ping{}, fmt.Errorf("ping received replies but printed no rtt line: %q", trunc(out))
	}
	return p, nil
}

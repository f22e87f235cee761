package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Config is one throughput configuration: parallel streams and direction
// (Reverse: server -> client, iperf3 -R).
type Config struct {
	Streams int
	Reverse bool
}

// Configs are the throughput configurations, in table column order.
var Configs = [4]Config{{1, false}, {1, true}, {4, false}, {4, true}}

// String is the column label, e.g. "1 stream →" or "4 streams ←".
func (c Config) String() string {
	s := fmt.Sprintf("%d stream", c.Streams)
	if c.Streams != 1 {
		s += "s"
	}
	if c.Reverse {
		return s + " ←"
	}
	return s + " →"
}

// TCPRun is one iperf3 TCP run with the CPU time the VPN processes of
// each end used during it (seconds; NaN when there are none).
type TCPRun struct {
	Gbps        float64
	Bytes       int64 // received
	Retransmits int64
	ServerCPU   float64
	ClientCPU   float64
}

// UDPRun is one small-packet run.
type UDPRun struct {
	PPS     float64 // datagrams/s that arrived
	LossPct float64
}

// Case holds everything measured for one case.
type Case struct {
	CaseInfo
	Negotiated string // transport and cipher as the tools logged them
	Engine     string // kvpn's TLS record layer, when it says
	MTU        int    // tunnel (or veth) MTU
	CPU        bool   // VPN processes' CPU time was measured

	TCP      [len(Configs)][]TCPRun
	UDP      [2][]UDPRun // forward, reverse
	PingIdle *Ping
	// Loaded are the pings through the tunnel while a single-stream TCP
	// upload (0) or download (1) loads it, one per repetition.
	Loaded [2][]Ping

	Notes []string
	Err   string // why the case failed, if it did
}

// Suspect notes start with one of these; such a case is marked in the
// tables.
var suspectPrefixes = []string{"WARNING", "TRANSPORT CHECK FAILED"}

// Suspect reports whether a note casts doubt on the case's numbers.
func (c *Case) Suspect() bool {
	for _, n := range c.Notes {
		for _, p := range suspectPrefixes {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
	}
	return false
}

// Label is the case's row label: its title, with " (!)" when suspect.
func (c *Case) Label() string {
	if c.Suspect() {
		return c.Title + " (!)"
	}
	return c.Title
}

// Throughput summarizes the Gbit/s of configuration i.
func (c *Case) Throughput(i int) Summary {
	var xs []float64
	for _, r := range c.TCP[i] {
		xs = append(xs, r.Gbps)
	}
	return Summarize(xs)
}

// CPU summarizes the CPU seconds per GB of one end in configuration i.
func (c *Case) CPUPerGB(i int, server bool) Summary {
	var xs []float64
	for _, r := range c.TCP[i] {
		cpu := r.ClientCPU
		if server {
			cpu = r.ServerCPU
		}
		xs = append(xs, CPUPerGB(cpu, r.Bytes))
	}
	return Summarize(xs)
}

// UDPSummary summarizes datagrams/s and loss of direction d (0 forward,
// 1 reverse).
func (c *Case) UDPSummary(d int) (pps, loss Summary) {
	var p, l []float64
	for _, r := range c.UDP[d] {
		p = append(p, r.PPS)
		l = append(l, r.LossPct)
	}
	return Summarize(p), Summarize(l)
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPU     string // model name from /proc/cpuinfo
	NProc   int
	Kernel  string
	Go      string
	Tools   []string // versions of iperf3, ocserv, openconnect
	LoadAvg string   // /proc/loadavg when the run started
}

// Report is a whole run.
type Report struct {
	Settings Settings
	Machine  Machine
	Command  string
	Started  time.Time
	Elapsed  time.Duration
	Cases    []*Case
}

func (r *Report) find(name string) *Case {
	for _, c := range r.Cases {
		if c.Name == name && c.Err == "" {
			return c
		}
	}
	return nil
}

// Formatting helpers. Missing values print as "—".
const missing = "—"

func num(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return missing
	}
	return fmt.Sprintf("%.*f", prec, x)
}

// FormatSummary prints "median [min–max]", or just the median for one
// value.
func FormatSummary(s Summary, prec int) string {
	if s.N == 0 {
		return missing
	}
	if s.N == 1 {
		return num(s.Median, prec)
	}
	return fmt.Sprintf("%s [%s–%s]", num(s.Median, prec), num(s.Min, prec), num(s.Max, prec))
}

// FormatKilo prints a rate in thousands: "85.8 k [80.1–90.2]".
func FormatKilo(s Summary) string {
	if s.N == 0 {
		return missing
	}
	k := Summary{N: s.N, Median: s.Median / 1e3, Min: s.Min / 1e3, Max: s.Max / 1e3}
	if s.N == 1 {
		return num(k.Median, 1) + " k"
	}
	return fmt.Sprintf("%s k [%s–%s]", num(k.Median, 1), num(k.Min, 1), num(k.Max, 1))
}

// FormatShare prints a ratio as a percentage ("7.8 %").
func FormatShare(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return missing
	}
	if r >= 0.1 {
		return fmt.Sprintf("%.0f %%", 100*r)
	}
	return fmt.Sprintf("%.1f %%", 100*r)
}

// FormatTimes prints a ratio as a factor ("1.05×").
func FormatTimes(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return missing
	}
	return fmt.Sprintf("%.2f×", r)
}

// LoadedRTT summarizes the average RTT of the loaded pings of direction
// d (0: under an upload, 1: under a download) over the repetitions.
func (c *Case) LoadedRTT(d int) Summary { return loadedRTT(c.Loaded[d]) }

func loadedRTT(ps []Ping) Summary {
	var xs []float64
	for _, p := range ps {
		xs = append(xs, p.Avg)
	}
	return Summarize(xs)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func (r *Report) runsDesc() string {
	return fmt.Sprintf("median [min–max] of %s of %d s", plural(r.Settings.Reps, "run"), int(r.Settings.Time/time.Second))
}

// Section renders the generated section of docs/performance.md.
func (r *Report) Section() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("## Results\n\n")
	if r.Settings.Quick {
		b.WriteString("**Smoke test (BENCH_QUICK=1): one short run per measurement; the numbers are not representative.**\n\n")
	}
	fmt.Fprintf(&b, "- Date: %s (took %s)\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %s, %d CPUs (nproc), kernel %s, load average at start %s\n", orDash(m.CPU), m.NProc, orDash(m.Kernel), orDash(m.LoadAvg))
	fmt.Fprintf(&b, "- Go: %s; tools: %s\n", orDash(m.Go), orDash(strings.Join(m.Tools, "; ")))
	fmt.Fprintf(&b, "- Command: `%s` (%d s per run, %s, cases: %s)\n\n", r.Command,
		int(r.Settings.Time/time.Second), plural(r.Settings.Reps, "repetition"), strings.Join(r.Settings.Cases, ", "))
	b.WriteString(r.Tables())
	b.WriteString(r.HowMeasured())
	return b.String()
}

// HowMeasured describes the method, with this run's parameters.
func (r *Report) HowMeasured() string {
	t := int(r.Settings.Time / time.Second)
	return fmt.Sprintf(`### How measured

- Every case gets two fresh network namespaces (server and client) joined
  by a veth pair (192.168.203.1/24 and .2, MTU 1500); nothing leaves them.
  The VPN server runs in the server namespace, the client in the client
  namespace; the iperf3 server runs in the server namespace bound to the
  server's tunnel address (10.203.0.1 for vpnd, 10.204.0.1 for ocserv, the
  veth address for the baseline) and the iperf3 client in the client
  namespace.
- Throughput: `+"`iperf3 -c ADDR -t %d -J`"+`, with `+"`-P 4`"+` for 4 streams
  and `+"`-R`"+` for server to client; the receiver's bits/s, %s
  of each, median and min–max. Ratios divide medians: by raw
  veth, and by stock ocserv + openconnect on the same transport (DTLS
  cases by ocserv-dtls, TLS cases by ocserv-tls, legacy DTLS cases by
  ocserv-legacy).
- CPU: utime+stime from /proc/PID/stat of the VPN processes of each end
  (vpnd, vpnc, openconnect; for ocserv every process in the server
  namespace whose name starts with "ocserv": main, sec-mod and workers)
  before and after each throughput run, divided by the GB (10^9 bytes)
  the iperf3 receiver got. iperf3's own CPU is not counted.
- Each pair runs with what it negotiates by itself (the Cases table):
  kvpn uses TLS 1.3 with AES-128-GCM; Debian's ocserv allows only TLS 1.2
  and picks AES-256-GCM for TLS and DTLS. The ratios to ocserv therefore
  compare implementations as shipped, not the same cipher.
- Transport check: UDP datagram counters of the server namespace
  (/proc/net/snmp) around each throughput run must show the data on UDP
  for DTLS cases and no UDP for TLS cases; a mismatch is listed in the
  notes.
- Small packets: `+"`iperf3 -u -l 64 -b 0 -t %d`"+` (and `+"`-R`"+`): datagrams/s that
  arrived at the receiver and the share lost, median of %d.
- Latency: `+"`ping -c 20 -i 0.05`"+` from the client namespace to the server's
  tunnel address on the idle tunnel; loaded: `+"`ping -c 100 -i 0.02`"+` while a
  single-stream `+"`iperf3 -t 5`"+` runs client to server (→) or server to client
  (← , `+"`-R`"+`), started 1 s before the pings, once per repetition: median of
  the runs' average RTTs [min–max] and the largest single RTT.
- Order per case: throughput, ping, small packets; the namespaces and all
  processes are removed before the next case starts.
`, t, plural(r.Settings.Reps, "repetition"), t, r.Settings.Reps)
}

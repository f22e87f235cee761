package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
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

// Table renders a Markdown table with columns padded for the terminal.
func Table(header []string, rows [][]string) string {
	w := make([]int, len(header))
	for i, h := range header {
		w[i] = max(3, utf8.RuneCountInString(h))
	}
	for _, row := range rows {
		for i, c := range row {
			if i < len(w) {
				w[i] = max(w[i], utf8.RuneCountInString(c))
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i := range w {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString(" " + c + strings.Repeat(" ", w[i]-utf8.RuneCountInString(c)) + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for i := range w {
		b.WriteString(" " + strings.Repeat("-", w[i]) + " |")
	}
	b.WriteString("\n")
	for _, row := range rows {
		line(row)
	}
	return b.String()
}

func (r *Report) configHeader(first string) []string {
	h := []string{first}
	for _, c := range Configs {
		h = append(h, c.String())
	}
	return h
}

// CasesTable lists what ran: programs, negotiated transport, MTU and
// record layer.
func (r *Report) CasesTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		neg := c.Negotiated
		if c.Err != "" {
			neg = "FAILED: " + c.Err
		}
		mtu := missing
		if c.MTU > 0 {
			mtu = fmt.Sprint(c.MTU)
		}
		eng := c.Engine
		if eng == "" {
			eng = missing
		}
		rows = append(rows, []string{c.Name, c.Server, c.Client, orDash(neg), mtu, eng})
	}
	return Table([]string{"case", "server", "client", "transport (as negotiated)", "MTU", "kvpn record layer"}, rows)
}

func orDash(s string) string {
	if s == "" {
		return missing
	}
	return s
}

// ThroughputTable: Gbit/s at the receiver, median [min–max].
func (r *Report) ThroughputTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		for i := range Configs {
			row = append(row, FormatSummary(c.Throughput(i), 2))
		}
		rows = append(rows, row)
	}
	return Table(r.configHeader("case"), rows)
}

// RatioTable: each case's median throughput as a share of raw veth and
// as a multiple of stock ocserv + openconnect on the same transport.
func (r *Report) RatioTable() string {
	base := r.find(BaselineCase)
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		ref := r.find(c.Reference())
		for i := range Configs {
			t := c.Throughput(i)
			share := missing
			if base != nil {
				share = FormatShare(Ratio(t, base.Throughput(i)))
			}
			times := missing
			if c.Transport != "" && ref != nil {
				times = FormatTimes(Ratio(t, ref.Throughput(i)))
			}
			row = append(row, share+" / "+times)
		}
		rows = append(rows, row)
	}
	return Table(r.configHeader("case (of veth / × ocserv)"), rows)
}

// CPUTable: CPU seconds per GB received, server / client, medians.
func (r *Report) CPUTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		for i := range Configs {
			if !c.CPU {
				row = append(row, missing)
				continue
			}
			row = append(row, num(c.CPUPerGB(i, true).Median, 2)+" / "+num(c.CPUPerGB(i, false).Median, 2))
		}
		rows = append(rows, row)
	}
	return Table(r.configHeader("case (server / client)"), rows)
}

// SmallPacketTable: 64-byte UDP datagrams/s and loss, and ping through the
// idle and the loaded tunnel.
func (r *Report) SmallPacketTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		for d := 0; d < 2; d++ {
			pps, loss := c.UDPSummary(d)
			cell := FormatKilo(pps)
			if loss.N > 0 {
				cell += " (" + num(loss.Median, 1) + " % lost)"
			}
			row = append(row, cell)
		}
		row = append(row, formatPing(c.PingIdle), formatLoaded(c.Loaded[0]), formatLoaded(c.Loaded[1]))
		rows = append(rows, row)
	}
	return Table([]string{"case", "UDP 64 B → pkt/s", "UDP 64 B ← pkt/s", "ping idle avg / max ms",
		"ping loaded → avg ms", "ping loaded ← avg ms"}, rows)
}

// SmallPacketRatioTable: each case's small-packet rate and loaded RTT
// against stock ocserv + openconnect on the same transport, medians over
// medians: rates as multiples (above 1× is more packets), loaded RTT as
// a ratio (below 1× is less delay).
func (r *Report) SmallPacketRatioTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		ref := r.find(c.Reference())
		if c.Transport == "" || ref == nil {
			continue
		}
		row := []string{c.Label()}
		for d := 0; d < 2; d++ {
			pps, _ := c.UDPSummary(d)
			refPPS, _ := ref.UDPSummary(d)
			row = append(row, FormatTimes(Ratio(pps, refPPS)))
		}
		for d := 0; d < 2; d++ {
			row = append(row, FormatTimes(Ratio(c.LoadedRTT(d), ref.LoadedRTT(d))))
		}
		rows = append(rows, row)
	}
	if rows == nil {
		return ""
	}
	return Table([]string{"case (× ocserv)", "UDP 64 B → pkt/s", "UDP 64 B ← pkt/s", "ping loaded → RTT", "ping loaded ← RTT"}, rows)
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

// formatLoaded prints the loaded pings of one direction: the median of
// their averages [min–max], the worst single RTT, and losses.
func formatLoaded(ps []Ping) string {
	if len(ps) == 0 {
		return missing
	}
	worst := math.NaN()
	var tx, rx int
	for _, p := range ps {
		if !(p.Max <= worst) {
			worst = p.Max
		}
		tx += p.Transmitted
		rx += p.Received
	}
	s := FormatSummary(loadedRTT(ps), 3) + " (max " + num(worst, 3) + ")"
	if rx < tx {
		s += fmt.Sprintf(" (%d/%d lost)", tx-rx, tx)
	}
	return s
}

func formatPing(p *Ping) string {
	if p == nil {
		return missing
	}
	s := num(p.Avg, 3) + " / " + num(p.Max, 3)
	if p.Received < p.Transmitted {
		s += fmt.Sprintf(" (%d/%d lost)", p.Transmitted-p.Received, p.Transmitted)
	}
	return s
}

// NotesList renders the notes of all cases.
func (r *Report) NotesList() string {
	var b strings.Builder
	for _, c := range r.Cases {
		for _, n := range c.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", c.Name, n)
		}
	}
	return b.String()
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

// Tables renders every table with its heading (Markdown; also what the
// harness prints).
func (r *Report) Tables() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Cases\n\n%s\n", r.CasesTable())
	fmt.Fprintf(&b, "### Throughput (Gbit/s at the receiver; %s; → client to server, ← server to client)\n\n%s\n", r.runsDesc(), r.ThroughputTable())
	fmt.Fprintf(&b, "### Throughput relative to raw veth and to ocserv + openconnect on the same transport (medians)\n\n%s\n", r.RatioTable())
	fmt.Fprintf(&b, "### CPU seconds per GB moved (median; server end / client end)\n\n%s\n", r.CPUTable())
	fmt.Fprintf(&b, "### Small packets (iperf3 UDP, 64-byte payload, unlimited rate; median) and latency (idle: ping -c 20 -i 0.05; loaded: ping -c 100 -i 0.02 under one TCP stream each way)\n\n%s\n", r.SmallPacketTable())
	if t := r.SmallPacketRatioTable(); t != "" {
		fmt.Fprintf(&b, "### Small packets and loaded RTT relative to ocserv + openconnect on the same transport (medians; issue #16's goals: rate ≥ 2×, RTT ≤ 1×)\n\n%s\n", t)
	}
	if notes := r.NotesList(); notes != "" {
		fmt.Fprintf(&b, "### Notes\n\n(!) after a case marks a warning below that makes its numbers suspect.\n\n%s\n", notes)
	}
	return b.String()
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

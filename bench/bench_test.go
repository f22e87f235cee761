package bench

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// The testdata files are real `iperf3 -J` outputs (iperf 3.12, between two
// namespaces) with the intervals cut down.
func TestParseIperfTCP(t *testing.T) {
	r, err := ParseIperf(readTestdata(t, "iperf3-tcp-forward.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Protocol != "TCP" || r.Streams != 1 || r.Reverse {
		t.Errorf("test_start: %+v", r)
	}
	if r.Bytes != 1809842176 || !near(r.BitsPerSecond, 14476580397.52077) || !near(r.Seconds, 1.000149) || r.Retransmits != 0 {
		t.Errorf("forward: %+v", r)
	}
	if !near(r.Gbps(), 14.47658039752077) {
		t.Errorf("Gbps = %v", r.Gbps())
	}

	r, err = ParseIperf(readTestdata(t, "iperf3-tcp-reverse-p2.json"))
	if err != nil {
		t.Fatal(err)
	}
	// -R -P 2: the receiver is the client; sum_received sums the streams;
	// retransmits come from the sender (the server).
	if !r.Reverse || r.Streams != 2 || r.Bytes != 497025024 || !near(r.BitsPerSecond, 3895333077.3149414) || r.Retransmits != 275 {
		t.Errorf("reverse: %+v", r)
	}
}

func TestParseIperfUDP(t *testing.T) {
	r, err := ParseIperf(readTestdata(t, "iperf3-udp64-forward.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Protocol != "UDP" || r.Packets != 114424 || r.Lost != 58072 || r.SentPackets != 114740 {
		t.Fatalf("udp: %+v", r)
	}
	// What arrived is what the receiver counted in bytes: 64 per datagram.
	if r.Received() != 3606528/64 {
		t.Errorf("received %d, want %d", r.Received(), 3606528/64)
	}
	if !near(r.PPS(), float64(56352)/2.009942) {
		t.Errorf("pps = %v", r.PPS())
	}
	if !near(r.LossPct(), 100*58072.0/114424) {
		t.Errorf("loss = %v", r.LossPct())
	}

	r, err = ParseIperf(readTestdata(t, "iperf3-udp64-reverse.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Reverse || r.Received() != 102 || r.LossPct() != 0 || !near(r.PPS(), 102/1.133118) {
		t.Errorf("udp reverse: %+v pps %v", r, r.PPS())
	}
}

func TestParseIperfErrors(t *testing.T) {
	_, err := ParseIperf(readTestdata(t, "iperf3-error.json"))
	if err == nil || !strings.Contains(err.Error(), "unable to connect to server") || errors.Is(err, ErrIperfBusy) {
		t.Errorf("error output: %v", err)
	}
	_, err = ParseIperf([]byte(`{"start":{},"intervals":[],"end":{},"error":"error - the server is busy running a test. try again later"}`))
	if !errors.Is(err, ErrIperfBusy) {
		t.Errorf("busy: %v", err)
	}
	if _, err := ParseIperf([]byte("iperf3: error - unable to connect")); err == nil {
		t.Error("non-JSON output accepted")
	}
	if _, err := ParseIperf([]byte(`{"start":{},"end":{}}`)); err == nil {
		t.Error("output without sums accepted")
	}
	// UDP: zero packets means no rate or loss, not a division by zero.
	var r Iperf
	if !math.IsNaN(r.PPS()) || !math.IsNaN(r.LossPct()) {
		t.Error("empty result should give NaN rates")
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in    string
		comm  string
		ticks uint64
	}{
		// A real line (cat's own), utime 3 + stime 4 patched in.
		{"6046 (cat) R 6002 6002 24099 0 -1 4194304 97 0 1 0 3 4 0 0 20 0 1 0 269290 3133440 347 18446744073709551615 0 0 0 0 0", "cat", 7},
		// ocserv renames its workers; names may hold spaces and parentheses.
		{"123 (ocserv-worker) S 1 1 1 0 -1 4194560 500 0 0 0 1500 2500 0 0 20 0 4 0 100 0 0", "ocserv-worker", 4000},
		{"77 (a) b (c)) S 1 1 1 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 0 0", "a) b (c)", 30},
	} {
		comm, ticks, err := ParseStat(tc.in)
		if err != nil || comm != tc.comm || ticks != tc.ticks {
			t.Errorf("ParseStat(%q) = %q, %d, %v; want %q, %d", tc.in, comm, ticks, err, tc.comm, tc.ticks)
		}
	}
	for _, bad := range []string{"", "123 cat R 1", "123 (cat) R 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 20 0"} {
		if _, _, err := ParseStat(bad); err == nil {
			t.Errorf("ParseStat(%q) accepted", bad)
		}
	}
	// This process's own stat parses (Linux only).
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		if comm, _, err := ParseStat(string(b)); err != nil || comm == "" {
			t.Errorf("own stat: %q %v", comm, err)
		}
	}
}

func TestParseSNMP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL
Ip: 2 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 58513 36729 0 95324 12 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`
	m, err := ParseSNMP(snmp, "Udp")
	if err != nil {
		t.Fatal(err)
	}
	if m["InDatagrams"] != 58513 || m["OutDatagrams"] != 95324 || m["RcvbufErrors"] != 12 {
		t.Errorf("Udp = %v", m)
	}
	if _, err := ParseSNMP(snmp, "Tcp"); err == nil {
		t.Error("missing protocol accepted")
	}
	if _, err := ParseSNMP("Udp: A B\nUdp: 1\n", "Udp"); err == nil {
		t.Error("short value line accepted")
	}
}

func TestParsePing(t *testing.T) {
	out := `PING 10.203.0.1 (10.203.0.1) 56(84) bytes of data.

--- 10.203.0.1 ping statistics ---
20 packets transmitted, 19 received, 5% packet loss, time 1002ms
rtt min/avg/max/mdev = 0.038/0.048/0.153/0.005 ms
`
	p, err := ParsePing(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.Transmitted != 20 || p.Received != 19 || p.Min != 0.038 || p.Avg != 0.048 || p.Max != 0.153 || p.Mdev != 0.005 {
		t.Errorf("%+v", p)
	}
	// Nothing came back: counts but no rtt line.
	p, err = ParsePing("--- x ping statistics ---\n20 packets transmitted, 0 received, +3 errors, 100% packet loss, time 1900ms\n")
	if err != nil || p.Received != 0 || !math.IsNaN(p.Avg) {
		t.Errorf("all lost: %+v %v", p, err)
	}
	if _, err := ParsePing("ping: connect: Network is unreachable\n"); err == nil {
		t.Error("no summary accepted")
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{3, 1, 2})
	if s != (Summary{N: 3, Median: 2, Min: 1, Max: 3}) {
		t.Errorf("odd: %+v", s)
	}
	s = Summarize([]float64{4, 1, math.NaN(), 2, 3})
	if s != (Summary{N: 4, Median: 2.5, Min: 1, Max: 4}) {
		t.Errorf("even with NaN: %+v", s)
	}
	s = Summarize(nil)
	if s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("empty: %+v", s)
	}
	if r := Ratio(Summary{N: 1, Median: 1}, Summary{N: 1, Median: 4}); r != 0.25 {
		t.Errorf("ratio %v", r)
	}
	if !math.IsNaN(Ratio(Summary{N: 1, Median: 1}, Summary{})) || !math.IsNaN(Ratio(Summary{N: 1, Median: 1}, Summary{N: 1})) {
		t.Error("ratio to nothing or zero should be NaN")
	}
	if v := CPUPerGB(1.5, 3e9); v != 0.5 {
		t.Errorf("CPUPerGB = %v", v)
	}
	if !math.IsNaN(CPUPerGB(1, 0)) || !math.IsNaN(CPUPerGB(math.NaN(), 1e9)) {
		t.Error("CPUPerGB without bytes or CPU should be NaN")
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{FormatSummary(Summary{N: 3, Median: 1.234, Min: 1.1, Max: 1.5}, 2), "1.23 [1.10–1.50]"},
		{FormatSummary(Summary{N: 1, Median: 1.234, Min: 1.234, Max: 1.234}, 2), "1.23"},
		{FormatSummary(Summary{}, 2), "—"},
		{FormatKilo(Summary{N: 2, Median: 85817, Min: 80100, Max: 91534}), "85.8 k [80.1–91.5]"},
		{FormatShare(0.0781), "7.8 %"},
		{FormatShare(0.5), "50 %"},
		{FormatShare(math.NaN()), "—"},
		{FormatTimes(1.049), "1.05×"},
		{FormatTimes(math.Inf(1)), "—"},
		{Configs[0].String(), "1 stream →"},
		{Configs[3].String(), "4 streams ←"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	tab := Table([]string{"a", "long header"}, [][]string{{"x→", "1"}, {"yyyy", "22"}})
	want := "| a    | long header |\n| ---- | ----------- |\n| x→   | 1           |\n| yyyy | 22          |\n"
	if tab != want {
		t.Errorf("table:\n%s\nwant:\n%s", tab, want)
	}
}

// sampleReport has a baseline, an ocserv reference per transport, kvpn on
// both, and a failed case.
func sampleReport() *Report {
	mk := func(name string, gbps float64, cpu bool) *Case {
		info, _ := LookupCase(name)
		c := &Case{CaseInfo: info, CPU: cpu, MTU: 1434, Negotiated: "x"}
		for i := range Configs {
			for _, f := range []float64{0.9, 1, 1.2} {
				run := TCPRun{Gbps: gbps * f * float64(i+1), Bytes: 1e9, ServerCPU: math.NaN(), ClientCPU: math.NaN()}
				if cpu {
					run.ServerCPU, run.ClientCPU = 2*f, 3*f
				}
				c.TCP[i] = append(c.TCP[i], run)
			}
		}
		c.UDP[0] = []UDPRun{{PPS: 50000, LossPct: 10}}
		c.PingIdle = &Ping{Transmitted: 20, Received: 20, Avg: 0.1, Max: 0.2}
		return c
	}
	veth := mk("veth", 10, false)
	ocd := mk("ocserv-dtls", 1, true)
	oct := mk("ocserv-tls", 0.8, true)
	kd := mk("kvpn-dtls", 1.5, true)
	kt := mk("kvpn-tls", 1.2, true)
	kt.Notes = []string{"transport check passed"}
	bad := &Case{CaseInfo: AllCases[3], Err: "vpnc did not log /tunnel up/"}
	return &Report{
		Settings: Settings{Time: 5 * time.Second, Reps: 3, Cases: []string{"veth", "kvpn-dtls", "kvpn-tls", "kvpn-plain", "ocserv-dtls", "ocserv-tls"}},
		Machine:  Machine{CPU: "Test CPU", NProc: 2, Kernel: "6.1.0", Go: "go1.26", LoadAvg: "0.00 0.01 0.05"},
		Command:  "make bench",
		Started:  time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC),
		Elapsed:  15 * time.Minute,
		Cases:    []*Case{veth, kd, kt, bad, ocd, oct},
	}
}

func rowOf(t *testing.T, table, title string) string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, "| "+title+" ") {
			return line
		}
	}
	t.Fatalf("no row %q in:\n%s", title, table)
	return ""
}

func TestReportTables(t *testing.T) {
	r := sampleReport()

	tp := r.ThroughputTable()
	// veth config 0: 9, 10, 12 Gbit/s -> median 10 [9.00–12.00].
	if row := rowOf(t, tp, "raw veth"); !strings.Contains(row, "| 10.00 [9.00–12.00] ") {
		t.Errorf("veth row: %s", row)
	}
	if row := rowOf(t, tp, "kvpn, plain TUN, DTLS"); strings.Count(row, "—") != 4 {
		t.Errorf("failed case should show no numbers: %s", row)
	}

	// Ratios: kvpn-dtls 1.5 / veth 10 = 15 %, / ocserv-dtls 1 = 1.50×;
	// kvpn-tls 1.2 / ocserv-tls 0.8 = 1.50×, / veth = 12 %.
	rt := r.RatioTable()
	if row := rowOf(t, rt, "kvpn, DTLS"); strings.Count(row, "15 % / 1.50×") != 4 {
		t.Errorf("kvpn-dtls ratios: %s", row)
	}
	if row := rowOf(t, rt, "kvpn, TLS"); strings.Count(row, "12 % / 1.50×") != 4 {
		t.Errorf("kvpn-tls ratios (must use ocserv-tls): %s", row)
	}
	if row := rowOf(t, rt, "raw veth"); strings.Count(row, "100 % / —") != 4 {
		t.Errorf("veth ratios: %s", row)
	}
	if row := rowOf(t, rt, "ocserv + openconnect, DTLS"); strings.Count(row, "10 % / 1.00×") != 4 {
		t.Errorf("ocserv ratios: %s", row)
	}

	// CPU per GB: medians of 2*f and 3*f over 1 GB each: 2.00 / 3.00.
	ct := r.CPUTable()
	if row := rowOf(t, ct, "kvpn, DTLS"); strings.Count(row, "2.00 / 3.00") != 4 {
		t.Errorf("cpu row: %s", row)
	}
	if row := rowOf(t, ct, "raw veth"); strings.Count(row, "—") != 4 {
		t.Errorf("veth has no VPN processes: %s", row)
	}

	st := r.SmallPacketTable()
	if row := rowOf(t, st, "kvpn, DTLS"); !strings.Contains(row, "50.0 k (10.0 % lost)") || !strings.Contains(row, "0.100 / 0.200") {
		t.Errorf("small packet row: %s", row)
	}

	if ca := r.CasesTable(); !strings.Contains(ca, "FAILED: vpnc did not log /tunnel up/") {
		t.Errorf("failed case not shown:\n%s", ca)
	}
	if n := r.NotesList(); n != "- kvpn-tls: transport check passed\n" {
		t.Errorf("notes: %q", n)
	}
}

func TestRatiosWithoutReferences(t *testing.T) {
	r := sampleReport()
	r.Cases = r.Cases[1:3] // kvpn only: no veth, no ocserv
	if row := rowOf(t, r.RatioTable(), "kvpn, DTLS"); strings.Count(row, "— / —") != 4 {
		t.Errorf("ratios without references: %s", row)
	}
}

func TestSection(t *testing.T) {
	r := sampleReport()
	s := r.Section()
	for _, want := range []string{
		"## Results", "2026-11-21 12:00 UTC", "Test CPU, 2 CPUs (nproc), kernel 6.1.0", "go1.26",
		"`make bench`", "median [min–max] of 3 runs of 5 s", "### How measured", "iperf3 -c ADDR -t 5 -J",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("section lacks %q", want)
		}
	}
	if strings.Contains(s, "Smoke test") {
		t.Error("full run labelled as smoke test")
	}
	r.Settings.Quick = true
	if !strings.Contains(r.Section(), "Smoke test") {
		t.Error("quick run not labelled")
	}
	if strings.Contains(s, BeginMarker) || strings.Contains(s, EndMarker) {
		t.Error("section must not contain the markers")
	}
}

// replaceSection is ReplaceMarked with docs/performance.md's markers.
func replaceSection(doc, section string) (string, error) {
	return ReplaceMarked(doc, BeginMarker, EndMarker, section)
}

func TestReplaceSection(t *testing.T) {
	doc := "# Performance\n\nHuman intro.\n\n" + BeginMarker + "\nold numbers\n" + EndMarker + "\n\nHuman outro.\n"
	out, err := replaceSection(doc, "new numbers")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Performance\n\nHuman intro.\n\n" + BeginMarker + "\nnew numbers\n" + EndMarker + "\n\nHuman outro.\n"
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	// Idempotent: replacing again with the same text changes nothing.
	if again, _ := replaceSection(out, "new numbers\n"); again != out {
		t.Errorf("second replacement changed the doc:\n%s", again)
	}

	// No markers: appended, prose kept.
	out, err = replaceSection("# Perf\nprose", "numbers\n")
	if err != nil || out != "# Perf\nprose\n\n"+BeginMarker+"\nnumbers\n"+EndMarker+"\n" {
		t.Errorf("append: %q %v", out, err)
	}
	// The new-file skeleton has exactly one section.
	out, err = replaceSection(NewDoc, "numbers\n")
	if err != nil || !strings.Contains(out, "edit the text outside them freely") || strings.Contains(out, "No results yet") {
		t.Errorf("skeleton: %q %v", out, err)
	}

	for _, bad := range []string{
		BeginMarker + "\nno end\n",
		EndMarker + "\n" + BeginMarker + "\n",
		BeginMarker + BeginMarker + EndMarker,
		"text " + EndMarker,
	} {
		if _, err := replaceSection(bad, "x"); err == nil {
			t.Errorf("replaceSection(%q) accepted", bad)
		}
	}
}

func TestLoadSettings(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	s, err := LoadSettings(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.Time != 5*time.Second || s.Reps != 3 || len(s.Cases) != len(AllCases) || s.Out != DefaultOut || s.Bin != "bin" || s.Quick {
		t.Errorf("defaults: %+v", s)
	}

	s, err = LoadSettings(nil, env(map[string]string{"BENCH_QUICK": "1"}))
	if err != nil || s.Time != time.Second || s.Reps != 1 || s.Out != "" {
		t.Errorf("quick: %+v %v", s, err)
	}
	// Explicit values win over quick's.
	s, err = LoadSettings([]string{"-reps", "2"}, env(map[string]string{"BENCH_QUICK": "1", "BENCH_TIME": "3", "BENCH_OUT": "x.md"}))
	if err != nil || s.Time != 3*time.Second || s.Reps != 2 || s.Out != "x.md" {
		t.Errorf("quick with overrides: %+v %v", s, err)
	}
	if got := strings.Join(s.Env, " "); got != "BENCH_QUICK=1 BENCH_TIME=3 BENCH_OUT=x.md" {
		t.Errorf("env record: %q", got)
	}
	// Flags win over the environment.
	s, err = LoadSettings([]string{"-time", "10s", "-cases", "ocserv,veth"}, env(map[string]string{"BENCH_TIME": "2", "BENCH_CASES": "kvpn"}))
	if err != nil || s.Time != 10*time.Second || strings.Join(s.Cases, ",") != "veth,ocserv-dtls,ocserv-tls" {
		t.Errorf("flags over env: %+v %v", s, err)
	}
	s, err = LoadSettings(nil, env(map[string]string{"BENCH_OUT": "-"}))
	if err != nil || s.Out != "" {
		t.Errorf("BENCH_OUT=-: %+v %v", s, err)
	}

	for _, bad := range []map[string]string{
		{"BENCH_TIME": "0"}, {"BENCH_TIME": "1.5s"}, {"BENCH_TIME": "fast"},
		{"BENCH_REPS": "0"}, {"BENCH_REPS": "x"}, {"BENCH_QUICK": "yes please"},
		{"BENCH_CASES": "kvpn-dtls,wireguard"}, {"BENCH_CASES": ","},
	} {
		if _, err := LoadSettings(nil, env(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := LoadSettings([]string{"-nope"}, env(nil)); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestParseCases(t *testing.T) {
	got, err := ParseCases(" kvpn-tls , veth,kvpn-tls")
	if err != nil || strings.Join(got, ",") != "veth,kvpn-tls" {
		t.Errorf("%v %v", got, err)
	}
	got, err = ParseCases("all")
	if err != nil || len(got) != len(AllCases) {
		t.Errorf("all: %v %v", got, err)
	}
	// Every case's reference exists.
	for _, c := range AllCases {
		if c.Transport == "" {
			continue
		}
		if _, ok := LookupCase(c.Reference()); !ok {
			t.Errorf("%s: no ocserv reference %q", c.Name, c.Reference())
		}
	}
}

func TestCommandLine(t *testing.T) {
	if got := CommandLine([]string{"BENCH_QUICK=1"}, true, []string{"bin/kvpnbench"}); got != "BENCH_QUICK=1 make bench" {
		t.Errorf("via make: %q", got)
	}
	if got := CommandLine(nil, false, []string{"bin/kvpnbench", "-reps", "5"}); got != "bin/kvpnbench -reps 5" {
		t.Errorf("direct: %q", got)
	}
}

func TestSuspectMarker(t *testing.T) {
	r := sampleReport()
	kd := r.Cases[1]
	if kd.Suspect() || kd.Label() != "kvpn, DTLS" {
		t.Fatalf("clean case marked: %q", kd.Label())
	}
	kd.Notes = append(kd.Notes, "WARNING: vpnc re-established the tunnel 3 times")
	if !kd.Suspect() || !strings.Contains(r.ThroughputTable(), "| kvpn, DTLS (!) ") {
		t.Errorf("warning not marked:\n%s", r.ThroughputTable())
	}
	if !strings.Contains(r.Tables(), "(!) after a case marks a warning") {
		t.Error("marker not explained")
	}
}

func TestSmallPacketRatios(t *testing.T) {
	r := sampleReport()
	kd, ocd := r.find("kvpn-dtls"), r.find("ocserv-dtls")
	kd.UDP[1] = []UDPRun{{PPS: 90000}, {PPS: 100000}, {PPS: 200000}}
	ocd.UDP[1] = []UDPRun{{PPS: 40000}}
	kd.Loaded[0] = []Ping{{Avg: 1}, {Avg: 2}, {Avg: 9}}
	ocd.Loaded[0] = []Ping{{Avg: 4}}
	// Medians: 50k/50k = 1.00×, 100k/40k = 2.50×, RTT 2/4 = 0.50×, none ←.
	if row := rowOf(t, r.SmallPacketRatioTable(), "kvpn, DTLS"); row != "| kvpn, DTLS                 | 1.00×            | 2.50×            | 0.50×             | —                 |" {
		t.Errorf("small-packet ratios: %s", row)
	}
	if t2 := r.SmallPacketRatioTable(); strings.Contains(t2, "raw veth") {
		t.Errorf("veth has no ocserv reference, yet has a row:\n%s", t2)
	}
	r.Cases = r.Cases[1:3]
	if t2 := r.SmallPacketRatioTable(); t2 != "" {
		t.Errorf("no references, yet a table:\n%s", t2)
	}
}

package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

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

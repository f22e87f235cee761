package bench

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

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

package ktlsvm

import (
	"strings"
	"testing"
	"time"
)

// TestVMKernelTLS proves the harness and the guest kernel's TLS: the probe
// sets TLS_TX/TLS_RX on loopback TCP sockets and checks the records
// byte-exactly against Go's AES-GCM, with negative controls.
func TestVMKernelTLS(t *testing.T) {
	start := time.Now()
	dir, release := Kernel(t)
	t.Logf("kernel %s in %s (%v)", release, dir, time.Since(start).Round(time.Millisecond))
	probe := BuildStatic(t, "./internal/ktlsprobe", false)

	out, passed := Run(t, Config{
		Binaries: map[string]string{"ktlsprobe": probe},
		Script:   "ktlsprobe",
		Timeout:  2 * time.Minute,
	})
	if !passed {
		t.Fatalf("VM script failed (console logged above)")
	}
	for _, want := range []string{
		"ktlsprobe: ok TLS_TX without ULP refused",
		"ktlsprobe: ok TCP_ULP tls",
		"ktlsprobe: ok TLS_TX with invalid cipher_type refused",
		"ktlsprobe: ok TLS_TX AES-128-GCM TLS 1.3 accepted",
		"ktlsprobe: ok record seq=0: header 17 03 03",
		"ktlsprobe: ok record seq=1: header 17 03 03",
		"ktlsprobe: ok TLS_RX AES-128-GCM TLS 1.3 accepted",
		"ktlsprobe: ok tampered record refused",
		"ktlsprobe: PASS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}

	// The probe's own view, while its sockets were open.
	var during strings.Builder
	for line := range strings.Lines(out) {
		if s, ok := strings.CutPrefix(line, "ktlsprobe-stat: "); ok {
			during.WriteString(s)
		}
	}
	live := ParseTLSStat(during.String())
	for _, k := range []string{"TlsCurrTxSw", "TlsCurrRxSw"} {
		if live[k] < 1 {
			t.Errorf("while the probe ran: %s = %d, want >= 1 (%v)", k, live[k], live)
		}
	}
	// The harness's view after the script: sockets closed, totals stay.
	after, ok := TLSStat(out)
	if !ok {
		t.Fatalf("no /proc/net/tls_stat block in the console output")
	}
	for k, min := range map[string]int64{"TlsTxSw": 1, "TlsRxSw": 1, "TlsDecryptError": 1} {
		if after[k] < min {
			t.Errorf("after the script: %s = %d, want >= %d", k, after[k], min)
		}
	}
	if after["TlsCurrTxSw"] != 0 || after["TlsCurrRxSw"] != 0 {
		t.Errorf("after the script: TlsCurrTxSw=%d TlsCurrRxSw=%d, want 0 (sockets closed)", after["TlsCurrTxSw"], after["TlsCurrRxSw"])
	}
	t.Logf("tls_stat during: %v; after: %v", live, after)
	t.Logf("TestVMKernelTLS total %v", time.Since(start).Round(time.Millisecond))
}

// TestVMReportsFailure checks that a failing script cannot pass: the script
// stops at the first failing command, also inside a pipeline (a test binary
// piped into tail must not hide its failure), and its status reaches the
// marker.
func TestVMReportsFailure(t *testing.T) {
	start := time.Now()
	out, passed := Run(t, Config{
		Script:  "echo step1 $KVPN_PROBE_ARG\nfalse | cat\necho not-reached",
		Args:    "KVPN_PROBE_ARG=from-cmdline",
		Timeout: time.Minute,
	})
	if passed {
		t.Fatalf("a script running false passed")
	}
	if !strings.Contains(out, "step1 from-cmdline") {
		t.Errorf("kernel command line KEY=VALUE did not reach the script's environment")
	}
	if strings.Contains(out, "not-reached") {
		t.Errorf("script went on after a failing command")
	}
	if got := resultLine(out); got != "KVPN-VM-RESULT: FAIL rc=1" {
		t.Errorf("result line %q, want %q", got, "KVPN-VM-RESULT: FAIL rc=1")
	}
	t.Logf("TestVMReportsFailure total %v", time.Since(start).Round(time.Millisecond))
}

// nsScript shows the two-namespace recipe other VM tests can copy; busybox
// has no "ip netns" and cannot name a veth peer (it is always veth0 at
// creation), so namespaces are held by "unshare -n sleep" processes and
// entered with "nsenter -t PID -n".
const nsScript = `
unshare -n sleep 600 &
A=$!
unshare -n sleep 600 &
B=$!
init=$(readlink /proc/1/ns/net)
for p in $A $B; do
	while [ "$(readlink /proc/$p/ns/net)" = "$init" ]; do sleep 0.05; done
done
ip link add vA type veth
ip link set veth0 name vB
ip link set vA netns $A
ip link set vB netns $B
nsenter -t $A -n sh -ec 'ip link set lo up; ip addr add 10.9.0.1/24 dev vA; ip link set vA up'
nsenter -t $B -n sh -ec 'ip link set lo up; ip addr add 10.9.0.2/24 dev vB; ip link set vB up'
nsenter -t $A -n ping -c 1 -W 5 10.9.0.2
nsenter -t $A -n ktlsprobe
kill $A $B
`

// TestVMNamespaces runs the probe inside a second network namespace joined
// to a third by a veth pair, and shows that /proc/net/tls_stat is per
// namespace: the initial namespace's counters stay at zero.
func TestVMNamespaces(t *testing.T) {
	start := time.Now()
	probe := BuildStatic(t, "./internal/ktlsprobe", false)
	out, passed := Run(t, Config{
		Binaries: map[string]string{"ktlsprobe": probe},
		Script:   nsScript,
		Timeout:  2 * time.Minute,
	})
	if !passed {
		t.Fatalf("VM script failed (console logged above)")
	}
	for _, want := range []string{"1 packets received", "ktlsprobe: PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	stat, ok := TLSStat(out)
	if !ok {
		t.Fatalf("no /proc/net/tls_stat block in the console output")
	}
	if stat["TlsTxSw"] != 0 || stat["TlsRxSw"] != 0 {
		t.Errorf("initial namespace counted the probe's sockets: %v", stat)
	}
	t.Logf("TestVMNamespaces total %v", time.Since(start).Round(time.Millisecond))
}

package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Summary is a run's result; its JSON form is what bench and e2e read.
type Summary struct {
	Server   string `json:"server"`
	Sessions int    `json:"sessions"` // requested

	MaxUp int64 `json:"max_up"` // most sessions up at once
	// UpAtEnd and DTLSUpAtEnd are sampled when the hold time is over,
	// before the sessions are ended.
	UpAtEnd     int64   `json:"up_at_end"`
	DTLSUpAtEnd int64   `json:"dtls_up_at_end"`
	DTLSShare   float64 `json:"dtls_share"` // DTLSUpAtEnd / UpAtEnd

	RampSeconds  float64 `json:"ramp_seconds"`   // start until every session's first attempt is up or failed
	LoginsPerSec float64 `json:"logins_per_sec"` // tunnels up during the ramp / RampSeconds

	Logins      uint64            `json:"logins"`   // cookies received
	Connects    uint64            `json:"connects"` // tunnels up
	DTLSOK      uint64            `json:"dtls_ok"`
	DTLSNotOff  uint64            `json:"dtls_not_offered"`
	Disconnects uint64            `json:"disconnects_sent"`
	Churned     uint64            `json:"churned"`
	DPDAnswered uint64            `json:"dpd_answered_tls"`
	Failures    map[string]uint64 `json:"failures"`

	Login   Percentiles `json:"login"` // dial to cookie
	Connect Percentiles `json:"connect"`
	DTLS    Percentiles `json:"dtls_setup"`
	RTT     Percentiles `json:"echo_rtt"`

	TxPackets   uint64 `json:"tx_packets"`
	TxBytes     uint64 `json:"tx_bytes"`
	RxPackets   uint64 `json:"rx_packets"`
	RxBytes     uint64 `json:"rx_bytes"`
	EchoReplies uint64 `json:"echo_replies"`

	// RSSBytes is the generator's own resident memory at the end of the
	// hold; RSSPerSessionKiB divides it by UpAtEnd.
	RSSBytes         uint64  `json:"rss_bytes"`
	RSSPerSessionKiB float64 `json:"rss_per_session_kib"`
}

func (r *runner) summary(ramp time.Duration, rampConnects uint64) *Summary {
	st := r.stats
	s := &Summary{
		Server:      r.cfg.Server.String(),
		Sessions:    r.cfg.Sessions,
		UpAtEnd:     st.Up.Load(),
		DTLSUpAtEnd: st.DTLSUp.Load(),
		RampSeconds: ramp.Seconds(),
		RSSBytes:    selfRSS(),
	}
	if s.UpAtEnd > 0 {
		s.DTLSShare = float64(s.DTLSUpAtEnd) / float64(s.UpAtEnd)
		s.RSSPerSessionKiB = float64(s.RSSBytes) / 1024 / float64(s.UpAtEnd)
	}
	if ramp > 0 {
		s.LoginsPerSec = float64(rampConnects) / ramp.Seconds()
	}
	return s
}

// finish fills in what the teardown adds (disconnects, failures seen
// while ending).
func (s *Summary) finish(st *Stats) {
	s.MaxUp = st.MaxUp.Load()
	s.Logins, s.Connects, s.DTLSOK, s.DTLSNotOff = st.Logins.Load(), st.Connects.Load(), st.DTLSOK.Load(), st.DTLSNotOffered.Load()
	s.Disconnects, s.Churned, s.DPDAnswered = st.Disconnects.Load(), st.Churned.Load(), st.DPDAnswered.Load()
	s.Failures = st.Failures()
	s.Login, s.Connect, s.DTLS, s.RTT = st.Login.Summary(), st.Connect.Summary(), st.DTLS.Summary(), st.RTT.Summary()
	s.TxPackets, s.TxBytes = st.TxPackets.Load(), st.TxBytes.Load()
	s.RxPackets, s.RxBytes = st.RxPackets.Load(), st.RxBytes.Load()
	s.EchoReplies = st.EchoReplies.Load()
}

// WriteText writes the human-readable summary.
func (s *Summary) WriteText(w io.Writer) {
	fmt.Fprintf(w, "server %s: %d sessions requested\n", s.Server, s.Sessions)
	fmt.Fprintf(w, "sessions up: %d at end, %d max concurrent; DTLS %d of %d (%.1f %%)\n",
		s.UpAtEnd, s.MaxUp, s.DTLSUpAtEnd, s.UpAtEnd, 100*s.DTLSShare)
	fmt.Fprintf(w, "ramp: %.2f s, %.1f logins/s; logins %d, tunnels %d, DTLS handshakes %d (not offered %d), churned %d, DISCONNECT sent %d\n",
		s.RampSeconds, s.LoginsPerSec, s.Logins, s.Connects, s.DTLSOK, s.DTLSNotOff, s.Churned, s.Disconnects)
	if len(s.Failures) == 0 {
		fmt.Fprintln(w, "failures: none")
	} else {
		parts := make([]string, 0, len(s.Failures))
		for _, k := range sortedKeys(s.Failures) {
			parts = append(parts, fmt.Sprintf("%s %d", k, s.Failures[k]))
		}
		fmt.Fprintf(w, "failures: %s\n", strings.Join(parts, ", "))
	}
	for _, l := range []struct {
		name string
		p    Percentiles
	}{{"login", s.Login}, {"connect", s.Connect}, {"dtls setup", s.DTLS}, {"echo rtt", s.RTT}} {
		fmt.Fprintf(w, "%-10s n=%d p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms\n", l.name, l.p.Count, l.p.P50, l.p.P90, l.p.P99, l.p.Max)
	}
	fmt.Fprintf(w, "traffic: sent %d packets (%d bytes), received %d packets (%d bytes), %d echo replies\n",
		s.TxPackets, s.TxBytes, s.RxPackets, s.RxBytes, s.EchoReplies)
	fmt.Fprintf(w, "loadgen RSS %.1f MiB, %.1f KiB per session up\n", float64(s.RSSBytes)/(1<<20), s.RSSPerSessionKiB)
}

// selfRSS is this process's VmRSS (proc(5)), 0 if unknown.
func selfRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"kvpn/internal/hist"
	"kvpn/server"
	"kvpn/session"
)

// burstChannel delivers one batch of packets, then fails.
type burstChannel struct {
	session.Channel
	sizes []int
	done  bool
}

var errDone = errors.New("done")

func (c *burstChannel) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if c.done {
		return 0, errDone
	}
	c.done = true
	for i, n := range c.sizes {
		pkt := bufs[i][offset : offset+n]
		pkt[0] = 0x45
		sizes[i] = n
	}
	return len(c.sizes), nil
}

type discard struct{}

func (discard) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }

// pump runs real uplink batches through the counting pump.
func pump(t *testing.T, tr *session.Traffic, sizes ...int) {
	t.Helper()
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	// Packets of 100 bytes are dropped by the check, as a spoofed packet
	// would be: they must not count.
	check := func(p []byte) (bool, error) { return len(p) != 100, nil }
	if err := session.UplinkCounted(&burstChannel{sizes: sizes}, discard{}, bufs, 16, check, tr); !errors.Is(err, errDone) {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s\n%s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, mf map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f := mf[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s with labels %v", name, want)
	return nil
}

func counter(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	return value(t, mf, name, labels).GetCounter().GetValue()
}

func TestCollector(t *testing.T) {
	var tr session.Traffic
	var tlsHS, dtlsHS hist.Latency
	drops := map[string]uint64{"spoofed": 0, "queue-full": 0}
	logins := uint64(0)
	src := func() server.Snapshot {
		return server.Snapshot{
			Sessions: map[string]int{server.TransportDTLS: 2, server.TransportTLS: 1, server.TransportNone: 0},
			Traffic: server.Totals{
				InPackets: tr.InPackets.Load(), InBytes: tr.InBytes.Load(),
				OutPackets: tr.OutPackets.Load(), OutBytes: tr.OutBytes.Load(),
			},
			Drops:           map[string]uint64{"spoofed": drops["spoofed"], "queue-full": drops["queue-full"]},
			Logins:          logins,
			LoginFailures:   4,
			TLSHandshake:    tlsHS.Snapshot(),
			DTLSHandshake:   dtlsHS.Snapshot(),
			HandshakeFailed: map[string]uint64{"tls": 1, "dtls": 0},
			PoolInUse:       map[string]int{"ipv4": 3},
			Uptime:          90 * time.Second,
			Panics:          map[string]uint64{"session": 2, "tun-reader": 1},
			ReadErrors:      map[string]uint64{"tun": 7, "dtls": 0},
			DTLSFallback:    9,
		}
	}
	ts := httptest.NewServer(Handler(src))
	defer ts.Close()

	mf := scrape(t, ts.URL)
	in := map[string]string{"direction": "in"}
	if v := counter(t, mf, "kvpn_tunnel_packets_total", in); v != 0 {
		t.Fatalf("packets before traffic: %v", v)
	}

	pump(t, &tr, 1400, 100, 60)
	tr.AddOut(5, 5000)
	drops["spoofed"]++
	logins = 2
	tlsHS.Observe(3 * time.Millisecond)
	tlsHS.Observe(40 * time.Millisecond)
	dtlsHS.Observe(20 * time.Millisecond)

	mf = scrape(t, ts.URL)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kvpn_tunnel_packets_total", in, 2}, // the 100-byte packet was dropped
		{"kvpn_tunnel_bytes_total", in, 1460},
		{"kvpn_tunnel_packets_total", map[string]string{"direction": "out"}, 5},
		{"kvpn_tunnel_bytes_total", map[string]string{"direction": "out"}, 5000},
		{"kvpn_drops_total", map[string]string{"reason": "spoofed"}, 1},
		{"kvpn_drops_total", map[string]string{"reason": "queue-full"}, 0},
		{"kvpn_logins_total", nil, 2},
		{"kvpn_login_failures_total", nil, 4},
		{"kvpn_handshake_failures_total", map[string]string{"transport": "tls"}, 1},
		{"kvpn_panics_total", map[string]string{"goroutine": "session"}, 2},
		{"kvpn_panics_total", map[string]string{"goroutine": "tun-reader"}, 1},
		{"kvpn_read_errors_total", map[string]string{"source": "tun"}, 7},
		{"kvpn_read_errors_total", map[string]string{"source": "dtls"}, 0},
		{"kvpn_dtls_fallback_packets_total", nil, 9},
	} {
		if got := counter(t, mf, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if g := value(t, mf, "kvpn_sessions", map[string]string{"transport": "dtls"}).GetGauge().GetValue(); g != 2 {
		t.Errorf("dtls sessions %v", g)
	}
	if g := value(t, mf, "kvpn_sessions", map[string]string{"transport": "none"}).GetGauge().GetValue(); g != 0 {
		t.Errorf("reconnecting sessions %v", g)
	}
	if g := value(t, mf, "kvpn_pool_addresses_in_use", map[string]string{"family": "ipv4"}).GetGauge().GetValue(); g != 3 {
		t.Errorf("pool addresses in use %v", g)
	}
	h := value(t, mf, "kvpn_handshake_seconds", map[string]string{"transport": "tls"}).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 0.042 || h.GetSampleSum() > 0.044 {
		t.Errorf("tls handshake histogram: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.Bucket {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 0.05:
			want = 2
		case b.GetUpperBound() >= 0.005:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("tls bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	if d := value(t, mf, "kvpn_handshake_seconds", map[string]string{"transport": "dtls"}).GetHistogram(); d.GetSampleCount() != 1 {
		t.Errorf("dtls handshakes %d", d.GetSampleCount())
	}
	if mf["go_goroutines"] == nil || mf["process_start_time_seconds"] == nil {
		t.Error("runtime and process metrics missing")
	}
}

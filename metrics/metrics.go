// Package metrics serves vpnd's Prometheus metrics.
//
// The data path never touches a Prometheus object: the server keeps plain
// atomic counters (per session, added per batch) and latency histograms
// with atomic buckets, and the Collector here reads them once per scrape
// (server.Snapshot) and hands Prometheus constant metrics. A scrape costs
// a walk over the sessions; a packet costs nothing extra.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kvpn/server"
)

// Source returns the server's counters; *server.Server's Snapshot method.
type Source func() server.Snapshot

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src Source

	sessions, bytes, packets, drops          *prometheus.Desc
	logins, loginFailures, loginThrottled    *prometheus.Desc
	handshake, handshakeFailures, uptimeDesc *prometheus.Desc
	poolInUse                                *prometheus.Desc
	panics, readErrors, dtlsFallback         *prometheus.Desc
}

// NewCollector makes a collector reading src at each scrape.
func NewCollector(src Source) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("kvpn_"+name, help, labels, nil)
	}
	return &Collector{
		src:               src,
		sessions:          d("sessions", "Sessions by transport carrying their downstream traffic (none: waiting for the client to reconnect).", "transport"),
		bytes:             d("tunnel_bytes_total", "IP bytes through the tunnel; in is from clients, out is to clients.", "direction"),
		packets:           d("tunnel_packets_total", "IP packets through the tunnel; in is from clients, out is to clients.", "direction"),
		drops:             d("drops_total", "Packets and requests dropped, by reason.", "reason"),
		logins:            d("logins_total", "Successful logins (sessions created)."),
		loginFailures:     d("login_failures_total", "Logins refused for a wrong user name or password."),
		loginThrottled:    d("login_throttled_total", "Logins refused by the throttle after repeated failures."),
		handshake:         d("handshake_seconds", "Duration of completed TLS (including kernel TLS setup) and DTLS handshakes.", "transport"),
		handshakeFailures: d("handshake_failures_total", "Failed TLS and DTLS handshakes.", "transport"),
		uptimeDesc:        d("uptime_seconds", "Seconds since vpnd started serving."),
		poolInUse:         d("pool_addresses_in_use", "Tunnel addresses handed out, by family (held by live sessions and by those waiting for a reconnect).", "family"),
		panics:            d("panics_total", "Panics recovered in vpnd's goroutines, by goroutine (a session's: that session ended; a shared reader's: restarted).", "goroutine"),
		readErrors:        d("read_errors_total", "Failed reads of the shared TUN and DTLS socket readers, each followed by a backoff.", "source"),
		dtlsFallback:      d("dtls_fallback_packets_total", "Packets meant for a session's DTLS channel that were sent over TLS."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.bytes, c.packets, c.drops, c.logins, c.loginFailures,
		c.loginThrottled, c.handshake, c.handshakeFailures, c.uptimeDesc, c.poolInUse, c.panics, c.readErrors, c.dtlsFallback} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one snapshot per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	for t, n := range s.Sessions {
		gauge(c.sessions, float64(n), transportLabel(t))
	}
	counter(c.bytes, s.Traffic.InBytes, "in")
	counter(c.bytes, s.Traffic.OutBytes, "out")
	counter(c.packets, s.Traffic.InPackets, "in")
	counter(c.packets, s.Traffic.OutPackets, "out")
	for r, n := range s.Drops {
		counter(c.drops, n, r)
	}
	counter(c.logins, s.Logins)
	counter(c.loginFailures, s.LoginFailures)
	counter(c.loginThrottled, s.LoginThrottled)
	ch <- prometheus.MustNewConstHistogram(c.handshake, s.TLSHandshake.Count, s.TLSHandshake.Sum, s.TLSHandshake.Buckets, "tls")
	ch <- prometheus.MustNewConstHistogram(c.handshake, s.DTLSHandshake.Count, s.DTLSHandshake.Sum, s.DTLSHandshake.Buckets, "dtls")
	for t, n := range s.HandshakeFailed {
		counter(c.handshakeFailures, n, t)
	}
	gauge(c.uptimeDesc, s.Uptime.Seconds())
	for f, n := range s.PoolInUse {
		gauge(c.poolInUse, float64(n), f)
	}
	for g, n := range s.Panics {
		counter(c.panics, n, g)
	}
	for src, n := range s.ReadErrors {
		counter(c.readErrors, n, src)
	}
	counter(c.dtlsFallback, s.DTLSFallback)
}

// transportLabel is the label value of a server transport name.
func transportLabel(t string) string {
	if t == server.TransportNone {
		return "none"
	}
	return strings.ToLower(t)
}

// Handler serves /metrics: kvpn's metrics plus the Go runtime's and the
// process's (memory, file descriptors, start time).
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// Server is the metrics HTTP server.
type Server struct {
	http *http.Server
	ln   net.Listener
}

// Listen binds addr (metrics-listen) and serves /metrics in the
// background; with a token (metrics-token) only to requests bearing it
// (RequireToken).
func Listen(addr, token string, src Source, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, http: &http.Server{
		Handler:           RequireToken(token, Handler(src), log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.http.Shutdown(ctx)
}

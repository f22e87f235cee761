package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"kvpn/server"
)

func TestMetricsToken(t *testing.T) {
	const token = "0123456789abcdef0123"
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Listen("127.0.0.1:0", token, func() server.Snapshot { return server.Snapshot{} }, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "http://" + s.Addr().String() + "/metrics"
	get := func(auth string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, auth := range []string{"", "Bearer ", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
		if code, body := get(auth); code != http.StatusUnauthorized || strings.Contains(body, "kvpn_") {
			t.Errorf("Authorization %q: %d %q, want 401 without metrics", auth, code, body)
		}
	}
	if !strings.Contains(logs.String(), "no or wrong bearer token") {
		t.Errorf("no log line for refused requests: %s", logs.String())
	}
	if code, body := get("Bearer " + token); code != http.StatusOK || !strings.Contains(body, "kvpn_uptime_seconds") {
		t.Errorf("right token: %d, body without kvpn_uptime_seconds:\n%.300s", code, body)
	}
}

func TestMetricsNoToken(t *testing.T) {
	s, err := Listen("127.0.0.1:0", "", func() server.Snapshot { return server.Snapshot{} }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("no token configured: %s", resp.Status)
	}
}

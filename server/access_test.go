package server

import (
	"strings"
	"testing"
)

func TestMetricsListenNeedsTokenOffLoopback(t *testing.T) {
	tok := strings.Repeat("a", MinMetricsToken)
	for _, tc := range []struct {
		listen, token string
		wantErr       string
	}{
		{"127.0.0.1:9100", "", ""},
		{"[::1]:9100", "", ""},
		{"localhost:9100", "", ""},
		{"192.168.1.1:9100", tok, ""},
		{"0.0.0.0:9100", tok, ""},
		{"0.0.0.0:9100", "", "not a loopback address and metrics-token is not set"},
		{":9100", "", "not a loopback address"},
		{"[::]:9100", "", "not a loopback address"},
		{"10.0.0.1:9100", "", "not a loopback address"},
		{"metrics.example.com:9100", "", "not a loopback address"},
		{"127.0.0.1:9100", "short", "metrics-token: shorter than 16 bytes"},
		{"127.0.0.1:9100", tok + " x", "printable ASCII without spaces"},
	} {
		cfg := DefaultConfig(t.TempDir())
		cfg.MetricsListen, cfg.MetricsToken = tc.listen, tc.token
		err := cfg.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s token %q: %v", tc.listen, tc.token, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s token %q: error %v, want %q", tc.listen, tc.token, err, tc.wantErr)
		}
	}
}

func TestRunAsValidation(t *testing.T) {
	for _, tc := range []struct {
		user, group, ctlGroup string
		wantErr               string
	}{
		{"kvpn", "", "", ""},
		{"kvpn", "kvpn", "kvpnctl", ""},
		{"", "", "adm", ""},
		{"root", "", "", "run-as-user: \"root\" is root"},
		{"", "kvpn", "", "run-as-group: set only with run-as-user"},
		{"kv pn", "", "", "not a user or group name"},
		{"kvpn", "", "a:b", "ctl-group"},
	} {
		cfg := DefaultConfig(t.TempDir())
		cfg.RunAsUser, cfg.RunAsGroup, cfg.CtlGroup = tc.user, tc.group, tc.ctlGroup
		err := cfg.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v: %v", tc, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%+v: error %v, want %q", tc, err, tc.wantErr)
		}
	}
}

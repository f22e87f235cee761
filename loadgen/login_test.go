package loadgen

import "testing"

func TestRefusalKind(t *testing.T) {
	for text, want := range map[string]string{
		"Login failed.": "password",
		"Too many failed logins; try again in 1s.":           "throttled",
		"Server busy, please try again.":                     "busy",
		"Login refused: session limit (max-same-clients 2).": "limit",
		"": "password",
	} {
		if got := refusalKind(text); got != want {
			t.Errorf("%q: %s, want %s", text, got, want)
		}
	}
}

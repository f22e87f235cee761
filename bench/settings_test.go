package bench

import (
	"strings"
	"testing"
	"time"
)

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

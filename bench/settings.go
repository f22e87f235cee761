package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// CaseInfo names one benchmark case. The harness (cmd/kvpnbench) knows
// how to set each one up; the names are what BENCH_CASES takes.
type CaseInfo struct {
	Name      string
	Title     string
	Transport string // "dtls", "tls", or "" for the raw veth baseline
	Server    string
	Client    string
	// Ref is the case the "× ocserv" ratio divides by; "" means
	// OcservCase(Transport).
	Ref string
}

// Reference is the name of the stock ocserv + openconnect case c is
// compared with.
func (c CaseInfo) Reference() string {
	if c.Ref != "" {
		return c.Ref
	}
	return OcservCase(c.Transport)
}

// LegacyDTLSCiphers is what openconnect is given in the legacy DTLS cases:
// an explicit cipher list, without PSK-NEGOTIATE, makes it ask for the
// AnyConnect legacy DTLS 1.2 (X-DTLS-Master-Secret resumption), as
// Cisco's clients do.
const LegacyDTLSCiphers = "OC-DTLS1_2-AES128-GCM"

// Case names with a special role in the ratios.
const (
	BaselineCase = "veth"
)

// OcservCase is the name of the stock ocserv + openconnect case a case on
// transport is compared with.
func OcservCase(transport string) string { return "ocserv-" + transport }

// AllCases lists every case in the order they run.
var AllCases = []CaseInfo{
	{"veth", "raw veth", "", "-", "-", ""},
	{"kvpn-dtls", "kvpn, DTLS", "dtls", "vpnd", "vpnc", ""},
	{"kvpn-tls", "kvpn, TLS", "tls", "vpnd", "vpnc --no-dtls", ""},
	{"kvpn-plain", "kvpn, plain TUN, DTLS", "dtls", "vpnd (tun-backend plain)", "vpnc --tun-backend plain", ""},
	{"ocserv-dtls", "ocserv + openconnect, DTLS", "dtls", "ocserv", "openconnect", ""},
	{"ocserv-tls", "ocserv + openconnect, TLS", "tls", "ocserv", "openconnect --no-dtls", ""},
	{"oc-vpnd-dtls", "openconnect -> vpnd, DTLS", "dtls", "vpnd", "openconnect", ""},
	{"oc-vpnd-tls", "openconnect -> vpnd, TLS", "tls", "vpnd", "openconnect --no-dtls", ""},
	{LegacyOcservCase, "ocserv + openconnect, legacy DTLS 1.2", "dtls", "ocserv",
		"openconnect --dtls-ciphers=" + LegacyDTLSCiphers, LegacyOcservCase},
	{"oc-vpnd-legacy", "openconnect -> vpnd, legacy DTLS 1.2", "dtls", "vpnd",
		"openconnect --dtls-ciphers=" + LegacyDTLSCiphers, LegacyOcservCase},
}

// LegacyOcservCase is stock ocserv + openconnect in legacy DTLS mode, the
// reference of the other legacy case.
const LegacyOcservCase = "ocserv-legacy"

// LookupCase finds a case by name.
func LookupCase(name string) (CaseInfo, bool) {
	for _, c := range AllCases {
		if c.Name == name {
			return c, true
		}
	}
	return CaseInfo{}, false
}

// Settings are the harness's knobs.
type Settings struct {
	Time  time.Duration // per iperf3 run (whole seconds)
	Reps  int           // repetitions of every measurement
	Cases []string      // names, in AllCases order
	Quick bool          // smoke-test mode
	Bin   string        // directory with vpnd and vpnc
	Out   string        // docs file to update; "" = none
	// Sessions part: loadgen session counts against vpnd (BENCH_SESSIONS)
	// and stock openconnect clients per server (BENCH_OC_CLIENTS; 0 =
	// none). The part runs when either is set.
	Sessions  []int
	OCClients int
	// Env lists the BENCH_* variables that were set, as NAME=VALUE, for
	// the command line recorded in the docs.
	Env []string
}

// Defaults of the settings.
const (
	DefaultTime = 5 * time.Second
	DefaultReps = 3
	DefaultBin  = "bin"
	DefaultOut  = "docs/performance.md"
)

// EnvHelp documents the environment variables (and the equivalent
// flags).
const EnvHelp = `environment (flags of the same meaning win over it):
  BENCH_TIME=5     seconds per iperf3 run (-time; "5" or "5s")
  BENCH_REPS=3     repetitions of every measurement (-reps)
  BENCH_CASES=...  comma list of cases to run (-cases; default all):
                   veth,kvpn-dtls,kvpn-tls,kvpn-plain,ocserv-dtls,ocserv-tls,oc-vpnd-dtls,oc-vpnd-tls,
                   ocserv-legacy,oc-vpnd-legacy (groups: kvpn, ocserv, oc-vpnd, legacy)
  BENCH_QUICK=1    smoke test: 1 s per run, 1 repetition, docs not written
                   unless BENCH_OUT is set (-quick)
  BENCH_BIN=bin    directory holding vpnd and vpnc (-bin)
  BENCH_OUT=docs/performance.md   file whose generated section is replaced;
                   "-" for none (-out)
  BENCH_SESSIONS=1000,10000  sessions part: kvpnload session counts
                   against vpnd (and the largest, capped, against ocserv)
  BENCH_OC_CLIENTS=200  sessions part: stock openconnect clients started at
                   once against vpnd and against ocserv (0 = none; default
                   200 when BENCH_SESSIONS is set)
  BENCH_CASES=none runs only the sessions part
  BENCH_DEBUG=1    print the VPN processes' last log lines after each case
                   (always done when a case fails)
`

// LoadSettings reads the BENCH_* environment (through getenv) and then
// the flags in args.
func LoadSettings(args []string, getenv func(string) string) (Settings, error) {
	s := Settings{Time: DefaultTime, Reps: DefaultReps, Bin: DefaultBin, Out: DefaultOut}
	var timeStr, casesStr, outStr string
	var outSet, timeSet, repsSet, ocSet bool
	for _, name := range []string{"BENCH_QUICK", "BENCH_TIME", "BENCH_REPS", "BENCH_CASES", "BENCH_BIN", "BENCH_OUT", "BENCH_SESSIONS", "BENCH_OC_CLIENTS"} {
		v := getenv(name)
		if v == "" {
			continue
		}
		s.Env = append(s.Env, name+"="+v)
		switch name {
		case "BENCH_QUICK":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return s, fmt.Errorf("BENCH_QUICK=%q: want 1 or 0", v)
			}
			s.Quick = b
		case "BENCH_TIME":
			timeStr, timeSet = v, true
		case "BENCH_REPS":
			n, err := strconv.Atoi(v)
			if err != nil {
				return s, fmt.Errorf("BENCH_REPS=%q: %v", v, err)
			}
			s.Reps, repsSet = n, true
		case "BENCH_CASES":
			casesStr = v
		case "BENCH_BIN":
			s.Bin = v
		case "BENCH_OUT":
			outStr, outSet = v, true
		case "BENCH_SESSIONS":
			n, err := ParseCounts(v)
			if err != nil {
				return s, fmt.Errorf("BENCH_SESSIONS=%q: %v", v, err)
			}
			s.Sessions = n
		case "BENCH_OC_CLIENTS":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return s, fmt.Errorf("BENCH_OC_CLIENTS=%q: want a count, 0 for none", v)
			}
			s.OCClients, ocSet = n, true
		}
	}

	fs := flag.NewFlagSet("kvpnbench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fTime := fs.String("time", "", "")
	fReps := fs.Int("reps", 0, "")
	fCases := fs.String("cases", "", "")
	fQuick := fs.Bool("quick", false, "")
	fBin := fs.String("bin", "", "")
	fOut := fs.String("out", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return s, err
		}
		return s, fmt.Errorf("%v\n%s", err, EnvHelp)
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q\n%s", fs.Arg(0), EnvHelp)
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "time":
			timeStr, timeSet = *fTime, true
		case "reps":
			s.Reps, repsSet = *fReps, true
		case "cases":
			casesStr = *fCases
		case "quick":
			s.Quick = *fQuick
		case "bin":
			s.Bin = *fBin
		case "out":
			outStr, outSet = *fOut, true
		}
	})

	if s.Quick {
		if !timeSet {
			s.Time = time.Second
		}
		if !repsSet {
			s.Reps = 1
		}
		if !outSet {
			s.Out = ""
		}
	}
	if timeSet {
		d, err := parseSeconds(timeStr)
		if err != nil {
			return s, err
		}
		s.Time = d
	}
	if s.Reps < 1 {
		return s, fmt.Errorf("repetitions must be at least 1, got %d", s.Reps)
	}
	if outSet {
		s.Out = outStr
		if outStr == "-" || outStr == "none" {
			s.Out = ""
		}
	}
	if len(s.Sessions) > 0 && !ocSet {
		s.OCClients = DefaultOCClients
	}
	if strings.TrimSpace(casesStr) == "none" {
		if len(s.Sessions) == 0 && s.OCClients == 0 {
			return s, fmt.Errorf("BENCH_CASES=none without BENCH_SESSIONS or BENCH_OC_CLIENTS: nothing to run")
		}
		return s, nil
	}
	cases, err := ParseCases(casesStr)
	if err != nil {
		return s, err
	}
	s.Cases = cases
	return s, nil
}

// parseSeconds takes "5" or a Go duration of whole seconds ("5s", "1m").
func parseSeconds(v string) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, fmt.Errorf("time %q: want whole seconds, e.g. 5 or 5s", v)
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("time %q: want whole seconds, at least 1", v)
	}
	return d, nil
}

// caseGroups are shorthands accepted in BENCH_CASES.
var caseGroups = map[string][]string{
	"kvpn":    {"kvpn-dtls", "kvpn-tls", "kvpn-plain"},
	"ocserv":  {"ocserv-dtls", "ocserv-tls"},
	"oc-vpnd": {"oc-vpnd-dtls", "oc-vpnd-tls"},
	"legacy":  {LegacyOcservCase, "oc-vpnd-legacy"},
}

// ParseCases turns a comma list of case names (and groups; "" or "all"
// for every case) into names in AllCases order, without duplicates.
func ParseCases(v string) ([]string, error) {
	want := map[string]bool{}
	v = strings.TrimSpace(v)
	if v == "" || v == "all" {
		for _, c := range AllCases {
			want[c.Name] = true
		}
	} else {
		for _, n := range strings.Split(v, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if g, ok := caseGroups[n]; ok {
				for _, m := range g {
					want[m] = true
				}
				continue
			}
			if _, ok := LookupCase(n); !ok {
				var names []string
				for _, c := range AllCases {
					names = append(names, c.Name)
				}
				return nil, fmt.Errorf("unknown case %q (cases: %s; groups: kvpn, ocserv, oc-vpnd, legacy; or all)", n, strings.Join(names, ", "))
			}
			want[n] = true
		}
	}
	var out []string
	for _, c := range AllCases {
		if want[c.Name] {
			out = append(out, c.Name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no cases selected by %q", v)
	}
	return out, nil
}

// CommandLine is the command recorded in the docs (run as root):
// `[BENCH_*=...] make bench` when run through make, else the program's own
// arguments.
func CommandLine(env []string, viaMake bool, args []string) string {
	parts := append([]string(nil), env...)
	if viaMake {
		parts = append(parts, "make", "bench")
	} else {
		parts = append(parts, args...)
	}
	return strings.Join(parts, " ")
}

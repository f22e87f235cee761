package bench

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The sessions part of the benchmark (BENCH_SESSIONS, BENCH_OC_CLIENTS):
// how a server serves a user base rather than one tunnel. Its knobs are
// its own, so the single-tunnel cases and it can run apart.

// DefaultOCClients is how many stock openconnect clients the sessions
// part starts against each server when BENCH_OC_CLIENTS is not set: the
// 200 of issue #11's table.
const DefaultOCClients = 200

// ClientRun is one server's result with N stock openconnect clients
// (script-tun mode, no TUN each) started at once from one address.
type ClientRun struct {
	Server     string        // "vpnd", "vpnd (ocpasswd file)" or "ocserv"
	Clients    int           // started
	Connected  int           // logged their address ("Configured as")
	AllUp      time.Duration // from the first start until the last connected
	DTLS       int           // established DTLS
	DTLSFailed int           // logged a DTLS handshake failure
	RSSPerSess float64       // server RSS growth per connected session, bytes
	PSSPerSess float64       // the same in proportional set size (shared pages split)
	Notes      []string
	Err        string
}

// ParseCounts reads a comma list of positive session counts
// ("1000,10000"); "" gives none.
func ParseCounts(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("session count %q: want a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// ClientsTable is the openconnect table: vpnd beside ocserv, one row
// per figure, as issue #11 states it.
func ClientsTable(runs []*ClientRun) string {
	if len(runs) == 0 {
		return ""
	}
	header := []string{""}
	for _, r := range runs {
		header = append(header, r.Server)
	}
	row := func(name string, f func(r *ClientRun) string) []string {
		out := []string{name}
		for _, r := range runs {
			if r.Err != "" && r.Connected == 0 {
				out = append(out, "FAILED: "+r.Err)
				continue
			}
			out = append(out, f(r))
		}
		return out
	}
	rows := [][]string{
		row(fmt.Sprintf("time until all %d are connected", runs[0].Clients), func(r *ClientRun) string {
			if r.Connected < r.Clients {
				return fmt.Sprintf("%d of %d connected (%.1f s)", r.Connected, r.Clients, r.AllUp.Seconds())
			}
			return fmt.Sprintf("%.1f s", r.AllUp.Seconds())
		}),
		row("clients with DTLS", func(r *ClientRun) string {
			s := fmt.Sprintf("%d of %d", r.DTLS, r.Clients)
			if r.DTLSFailed > 0 {
				s += fmt.Sprintf(" (%d logged a DTLS handshake failure)", r.DTLSFailed)
			}
			return s
		}),
		row("server memory per session (RSS)", func(r *ClientRun) string { return FormatBytes(r.RSSPerSess) }),
		row("server memory per session (PSS)", func(r *ClientRun) string { return FormatBytes(r.PSSPerSess) }),
	}
	return Table(header, rows)
}

// FormatBytes prints a size in KiB or MiB.
func FormatBytes(b float64) string {
	switch {
	case b != b: // NaN
		return "-"
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", b/1024)
	}
}

// SessionsReport is the sessions part of a run.
type SessionsReport struct {
	Machine Machine
	Command string
	Started time.Time
	Elapsed time.Duration
	Clients []*ClientRun
	Loads   []*LoadRun
	// OcservCap is where the kvpnload runs against ocserv stopped, and why.
	OcservCap string
}

// Tables renders the sessions part's tables with their headings.
func (r *SessionsReport) Tables() string {
	var b strings.Builder
	if len(r.Clients) > 0 {
		fmt.Fprintf(&b, "### %d stock openconnect clients from one address, started at once\n\n%s\n",
			r.Clients[0].Clients, ClientsTable(r.Clients))
		var notes []string
		for _, c := range r.Clients {
			notes = append(notes, c.Notes...)
			if c.Err != "" {
				notes = append(notes, c.Server+" FAILED: "+c.Err)
			}
		}
		if len(notes) > 0 {
			b.WriteString("Notes:\n\n")
			for _, n := range notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
			b.WriteString("\n")
		}
	}
	if len(r.Loads) > 0 {
		fmt.Fprintf(&b, "### kvpnload: idle sessions from one address (TLS + DTLS up, DPD and keepalive answered)\n\n%s\n", LoadTable(r.Loads))
		if t := TrafficTable(r.Loads); t != "" {
			fmt.Fprintf(&b, "### kvpnload: sessions sending traffic (ICMP echo to the server's tunnel address, answered by its kernel)\n\n%s\n", t)
		}
		var notes []string
		if r.OcservCap != "" {
			notes = append(notes, r.OcservCap)
		}
		for _, l := range r.Loads {
			notes = append(notes, l.Notes...)
		}
		if len(notes) > 0 {
			b.WriteString("Notes:\n\n")
			for _, n := range notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Section renders the generated section of docs/scaling.md.
func (r *SessionsReport) Section() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("## Measured: sessions (make bench, sessions part)\n\n")
	fmt.Fprintf(&b, "- Date: %s (took %s)\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %s, %d CPUs (nproc), kernel %s, load average at start %s\n", orDash(m.CPU), m.NProc, orDash(m.Kernel), orDash(m.LoadAvg))
	fmt.Fprintf(&b, "- Go: %s; tools: %s\n", orDash(m.Go), orDash(strings.Join(m.Tools, "; ")))
	fmt.Fprintf(&b, "- Command: `%s`\n\n", r.Command)
	b.WriteString(r.Tables())
	b.WriteString(sessionsHowMeasured)
	return b.String()
}

const sessionsHowMeasured = `### How measured

- Fresh server and client namespaces joined by a veth pair, as for the
  single-tunnel cases; every client runs in the client namespace, so all
  of them come from one address (192.168.203.2), as users behind a NAT.
- openconnect table: N users (user1..userN, one password each, written
  with each server's own tool: ` + "`vpnd passwd`" + ` (argon2id, 19 MiB and two
  passes: tens of ms per check) and ` + "`ocpasswd`" + ` (sha-crypt, a few ms);
  the column "vpnd (ocpasswd file)" is vpnd reading the file ocpasswd
  wrote, as a user replacing ocserv brings it: the same password cost as
  ocserv's),
  no session limits (vpnd ` + "`max-clients = 0`, `max-same-clients = 0`" + `;
  ocserv the same and ` + "`rate-limit-ms = 0`" + `), a /16 pool. N stock
  ` + "`openconnect -S --script 'exec sleep 86400'`" + ` processes (script-tun: no TUN
  device each) are started at once; "connected" is the moment each logs
  "Configured as", "DTLS" counts those that log "Established DTLS
  connection" within 30 s after the last connected.
- Server memory per session: growth of the resident set size (and of the
  proportional set size, which splits shared pages) summed over the
  server's processes (vpnd; ocserv's main, sec-mod and every worker), from
  1 s after start to after the DTLS wait, divided by the connected
  sessions.
`

// LoadRun is one kvpnload run against a server: Sessions held idle
// (TLS and DTLS up, DPD and keepalive answered), or Traffic sessions each
// sending echo requests.
type LoadRun struct {
	Server   string // "vpnd" or "ocserv"
	Sessions int
	Traffic  bool // sessions send --pps echo requests of --size bytes
	PPS      int
	Size     int

	Up         int64   // sessions up when the ramp ended
	DTLS       int64   // of them with DTLS up
	LoginsPerS float64 // tunnels up per second over the ramp
	Ramp       time.Duration
	LoginP50   float64 // ms
	LoginP99   float64
	DTLSP50    float64
	DTLSP99    float64
	Failures   map[string]uint64
	RSSPerSess float64 // server RSS growth per session up, bytes
	PSSPerSess float64
	IdleCPU    float64 // server CPU over the idle window, % of one core
	Mbps       float64 // traffic runs: echo bytes received per second, Mbit/s
	ServerCPU  float64 // traffic runs: server CPU, % of one core
	LoadgenKiB float64 // the generator's own RSS per session
	Notes      []string
	Err        string
}

// LoadTable is the kvpnload table, one row per run.
func LoadTable(runs []*LoadRun) string {
	header := []string{"server", "sessions", "up (DTLS)", "logins/s", "login p50/p99 ms", "DTLS setup p50/p99 ms",
		"RSS per session", "PSS per session", "idle CPU (% of a core)", "failures"}
	var rows [][]string
	for _, r := range runs {
		if r.Traffic {
			continue
		}
		rows = append(rows, []string{r.Server, strconv.Itoa(r.Sessions),
			fmt.Sprintf("%d (%d)", r.Up, r.DTLS), fmt.Sprintf("%.0f", r.LoginsPerS),
			fmt.Sprintf("%.0f / %.0f", r.LoginP50, r.LoginP99), fmt.Sprintf("%.0f / %.0f", r.DTLSP50, r.DTLSP99),
			FormatBytes(r.RSSPerSess), FormatBytes(r.PSSPerSess), fmt.Sprintf("%.1f", r.IdleCPU), failuresString(r)})
	}
	return Table(header, rows)
}

// TrafficTable is the kvpnload table of the runs with traffic.
func TrafficTable(runs []*LoadRun) string {
	header := []string{"server", "sessions sending", "echo requests per session", "up (DTLS)", "server receives (veth)", "server CPU (% of a core)", "failures"}
	var rows [][]string
	for _, r := range runs {
		if !r.Traffic {
			continue
		}
		rows = append(rows, []string{r.Server, strconv.Itoa(r.Sessions), fmt.Sprintf("%d/s x %d B", r.PPS, r.Size),
			fmt.Sprintf("%d (%d)", r.Up, r.DTLS), fmt.Sprintf("%.0f Mbit/s", r.Mbps), fmt.Sprintf("%.0f", r.ServerCPU), failuresString(r)})
	}
	if len(rows) == 0 {
		return ""
	}
	return Table(header, rows)
}

func failuresString(r *LoadRun) string {
	if r.Err != "" {
		return "FAILED: " + r.Err
	}
	if len(r.Failures) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(r.Failures))
	for k := range r.Failures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.Failures[k]))
	}
	return strings.Join(parts, ", ")
}

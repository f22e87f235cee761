package bench

import (
	"fmt"
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
	Server     string        // "vpnd" or "ocserv"
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
  with each server's own tool: ` + "`vpnd passwd`" + ` (argon2id) and ` + "`ocpasswd`" + `),
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

package bench

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// The report's Markdown tables, as docs/performance.md shows them.

// Table renders a Markdown table with columns padded for the terminal.
func Table(header []string, rows [][]string) string {
	w := make([]int, len(header))
	for i, h := range header {
		w[i] = max(3, utf8.RuneCountInString(h))
	}
	for _, row := range rows {
		for i, c := range row {
			if i < len(w) {
				w[i] = max(w[i], utf8.RuneCountInString(c))
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i := range w {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString(" " + c + strings.Repeat(" ", w[i]-utf8.RuneCountInString(c)) + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for i := range w {
		b.WriteString(" " + strings.Repeat("-", w[i]) + " |")
	}
	b.WriteString("\n")
	for _, row := range rows {
		line(row)
	}
	return b.String()
}

func (r *Report) configHeader(first string) []string {
	h := []string{first}
	for _, c := range Configs {
		h = append(h, c.String())
	}
	return h
}

// CasesTable lists what ran: programs, negotiated transport, MTU and
// record layer.
func (r *Report) CasesTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		neg := c.Negotiated
		if c.Err != "" {
			neg = "FAILED: " + c.Err
		}
		mtu := missing
		if c.MTU > 0 {
			mtu = fmt.Sprint(c.MTU)
		}
		eng := c.Engine
		if eng == "" {
			eng = missing
		}
		rows = append(rows, []string{c.Name, c.Server, c.Client, orDash(neg), mtu, eng})
	}
	return Table([]string{"case", "server", "client", "transport (as negotiated)", "MTU", "kvpn record layer"}, rows)
}

func orDash(s string) string {
	if s == "" {
		return missing
	}
	return s
}

// ThroughputTable: Gbit/s at the receiver, median [min–max].
func (r *Report) ThroughputTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		for i := range Configs {
			row = append(row, FormatSummary(c.Throughput(i), 2))
		}
		rows = append(rows, row)
	}
	return Table(r.configHeader("case"), rows)
}

// RatioTable: each case's median throughput as a share of raw veth and
// as a multiple of stock ocserv + openconnect on the same transport.
func (r *Report) RatioTable() string {
	base := r.find(BaselineCase)
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		ref := r.find(c.Reference())
		for i := range Configs {
			t := c.Throughput(i)
			share := missing
			if base != nil {
				share = FormatShare(Ratio(t, base.Throughput(i)))
			}
			times := missing
			if c.Transport != "" && ref != nil {
				times = FormatTimes(Ratio(t, ref.Throughput(i)))
			}
			row = append(row, share+" / "+times)
		}
		rows = append(rows, row)
	}
	return Table(r.configHeader("case (of veth / × ocserv)"), rows)
}

// CPUTable: CPU seconds per GB received, server / client, medians.
func (r *Report) CPUTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		for i := range Configs {
			if !c.CPU {
				row = append(row, missing)
				continue
			}
			row = append(row, num(c.CPUPerGB(i, true).Median, 2)+" / "+num(c.CPUPerGB(i, false).Median, 2))
		}
		rows = append(rows, row)
	}
	return Table(r.configHeader("case (server / client)"), rows)
}

// SmallPacketTable: 64-byte UDP datagrams/s and loss, and ping through the
// idle and the loaded tunnel.
func (r *Report) SmallPacketTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		row := []string{c.Label()}
		for d := 0; d < 2; d++ {
			pps, loss := c.UDPSummary(d)
			cell := FormatKilo(pps)
			if loss.N > 0 {
				cell += " (" + num(loss.Median, 1) + " % lost)"
			}
			row = append(row, cell)
		}
		row = append(row, formatPing(c.PingIdle), formatLoaded(c.Loaded[0]), formatLoaded(c.Loaded[1]))
		rows = append(rows, row)
	}
	return Table([]string{"case", "UDP 64 B → pkt/s", "UDP 64 B ← pkt/s", "ping idle avg / max ms",
		"ping loaded → avg ms", "ping loaded ← avg ms"}, rows)
}

// SmallPacketRatioTable: each case's small-packet rate and loaded RTT
// against stock ocserv + openconnect on the same transport, medians over
// medians: rates as multiples (above 1× is more packets), loaded RTT as
// a ratio (below 1× is less delay).
func (r *Report) SmallPacketRatioTable() string {
	var rows [][]string
	for _, c := range r.Cases {
		ref := r.find(c.Reference())
		if c.Transport == "" || ref == nil {
			continue
		}
		row := []string{c.Label()}
		for d := 0; d < 2; d++ {
			pps, _ := c.UDPSummary(d)
			refPPS, _ := ref.UDPSummary(d)
			row = append(row, FormatTimes(Ratio(pps, refPPS)))
		}
		for d := 0; d < 2; d++ {
			row = append(row, FormatTimes(Ratio(c.LoadedRTT(d), ref.LoadedRTT(d))))
		}
		rows = append(rows, row)
	}
	if rows == nil {
		return ""
	}
	return Table([]string{"case (× ocserv)", "UDP 64 B → pkt/s", "UDP 64 B ← pkt/s", "ping loaded → RTT", "ping loaded ← RTT"}, rows)
}

// formatLoaded prints the loaded pings of one direction: the median of
// their averages [min–max], the worst single RTT, and losses.
func formatLoaded(ps []Ping) string {
	if len(ps) == 0 {
		return missing
	}
	worst := math.NaN()
	var tx, rx int
	for _, p := range ps {
		if !(p.Max <= worst) {
			worst = p.Max
		}
		tx += p.Transmitted
		rx += p.Received
	}
	s := FormatSummary(loadedRTT(ps), 3) + " (max " + num(worst, 3) + ")"
	if rx < tx {
		s += fmt.Sprintf(" (%d/%d lost)", tx-rx, tx)
	}
	return s
}

func formatPing(p *Ping) string {
	if p == nil {
		return missing
	}
	s := num(p.Avg, 3) + " / " + num(p.Max, 3)
	if p.Received < p.Transmitted {
		s += fmt.Sprintf(" (%d/%d lost)", p.Transmitted-p.Received, p.Transmitted)
	}
	return s
}

// NotesList renders the notes of all cases.
func (r *Report) NotesList() string {
	var b strings.Builder
	for _, c := range r.Cases {
		for _, n := range c.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", c.Name, n)
		}
	}
	return b.String()
}

// Tables renders every table with its heading (Markdown; also what the
// harness prints).
func (r *Report) Tables() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Cases\n\n%s\n", r.CasesTable())
	fmt.Fprintf(&b, "### Throughput (Gbit/s at the receiver; %s; → client to server, ← server to client)\n\n%s\n", r.runsDesc(), r.ThroughputTable())
	fmt.Fprintf(&b, "### Throughput relative to raw veth and to ocserv + openconnect on the same transport (medians)\n\n%s\n", r.RatioTable())
	fmt.Fprintf(&b, "### CPU seconds per GB moved (median; server end / client end)\n\n%s\n", r.CPUTable())
	fmt.Fprintf(&b, "### Small packets (iperf3 UDP, 64-byte payload, unlimited rate; median) and latency (idle: ping -c 20 -i 0.05; loaded: ping -c 100 -i 0.02 under one TCP stream each way)\n\n%s\n", r.SmallPacketTable())
	if t := r.SmallPacketRatioTable(); t != "" {
		fmt.Fprintf(&b, "### Small packets and loaded RTT relative to ocserv + openconnect on the same transport (medians; issue #16's goals: rate ≥ 2×, RTT ≤ 1×)\n\n%s\n", t)
	}
	if notes := r.NotesList(); notes != "" {
		fmt.Fprintf(&b, "### Notes\n\n(!) after a case marks a warning below that makes its numbers suspect.\n\n%s\n", notes)
	}
	return b.String()
}

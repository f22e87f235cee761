//go:build linux

package main

// Issue #15: printing show status, sessions, id, iroutes, events and the
// ban views.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"kvpn/ctl"
)

// printOps prints the reply of issue #15's commands; false for others.
func printOps(w io.Writer, cmd string, rep ctl.Reply) bool {
	switch cmd {
	case ctl.CmdShowStatus:
		printStatus(w, rep.Status)
	case ctl.CmdShowSessions:
		printSessions(w, rep.Users)
	case ctl.CmdShowID:
		for _, u := range rep.Users {
			printUser(w, u)
			tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
			fmt.Fprintf(tw, "group:\t%s\n", orDash(u.Group))
			fmt.Fprintf(tw, "address6:\t%s\n", orDash(u.Address6))
			for _, r := range u.IRoutes {
				fmt.Fprintf(tw, "iroute:\t%s\n", r)
			}
			tw.Flush()
		}
	case ctl.CmdShowIRoutes:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NETWORK\tUSER\tID\tSTATE")
		for _, r := range rep.IRoutes {
			id, state := "-", "no session"
			if r.ID != 0 {
				id, state = fmt.Sprint(r.ID), "routed, reconnecting"
				if r.Connected {
					state = "routed"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Network, r.User, id, state)
		}
		tw.Flush()
	case ctl.CmdShowIPBans, ctl.CmdShowIPBanPoints:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tSCORE\tBANNED\tSINCE\tUNTIL")
		now := time.Now()
		for _, b := range rep.Bans {
			fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s (%s)\n", b.Address, b.Score, b.Banned,
				b.Since.UTC().Format(time.RFC3339), b.Expires.UTC().Format(time.RFC3339), b.Expires.Sub(now).Round(time.Second))
		}
		tw.Flush()
	default:
		return false
	}
	return true
}

func printStatus(w io.Writer, st *ctl.Status) {
	if st == nil {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	if st.NodeName != "" {
		row("node", st.NodeName)
	}
	row("pid", st.PID)
	row("started", st.Started.UTC().Format(time.RFC3339))
	row("uptime", uptime(st.UptimeSeconds))
	row("sessions", st.Sessions)
	row("  connected", st.Connected)
	row("  resumable (no connection)", st.Resumable)
	row("  on DTLS", st.DTLS)
	row("  kernel TLS tx/rx", fmt.Sprintf("%d / %d", st.KTLSTX, st.KTLSRX))
	row("bytes in/out", fmt.Sprintf("%d / %d", st.BytesIn, st.BytesOut))
	row("packets in/out", fmt.Sprintf("%d / %d", st.PacketsIn, st.PacketsOut))
	row("logins", st.Logins)
	row("login failures", st.LoginFailures)
	row("connections not logged in", st.LoginConnections)
	row("banned addresses", st.BannedAddresses)
	row("addresses with ban points", st.ScoredAddresses)
	row("iroutes routed", st.IRoutes)
	tw.Flush()
}

func printSessions(w io.Writer, us []ctl.User) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tGROUP\tADDRESS\tREMOTE\tSTATE\tTRANSPORT\tBYTES-IN\tBYTES-OUT\tUPTIME")
	for _, u := range us {
		state := "connected"
		if !u.Connected {
			state = "resumable"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", u.ID, u.User, orDash(u.Group), orDash(u.Address),
			u.Remote, state, u.Transport, u.BytesIn, u.BytesOut, uptime(u.UptimeSeconds))
	}
	tw.Flush()
}

// streamEvents is `vpnd ctl show events`: one line per event until
// interrupted (SIGINT, SIGTERM) or vpnd stops.
func streamEvents(path string, req ctl.Request, asJSON bool, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(stdout)
	return ctl.Stream(ctx, path, req, func(rep ctl.Reply) {
		if asJSON {
			enc.Encode(rep)
			return
		}
		if rep.Event == nil {
			fmt.Fprintln(stdout, rep.Message)
		} else {
			fmt.Fprintln(stdout, formatEvent(*rep.Event))
		}
		if f, ok := stdout.(interface{ Sync() error }); ok {
			f.Sync()
		}
	})
}

// formatEvent is one event as a line of text.
func formatEvent(e ctl.Event) string {
	s := fmt.Sprintf("%s %s id=%d user=%s", e.Time.UTC().Format(time.RFC3339), e.Type, e.ID, e.User)
	for _, kv := range []struct{ k, v string }{
		{"address", e.Address}, {"address6", e.Address6}, {"remote", e.Remote}, {"transport", e.Transport},
	} {
		if kv.v != "" {
			s += " " + kv.k + "=" + kv.v
		}
	}
	if e.Type == ctl.EventEnd {
		s += fmt.Sprintf(" bytes-in=%d bytes-out=%d duration=%s", e.BytesIn, e.BytesOut, uptime(e.DurationSeconds))
	}
	if e.Reason != "" {
		s += fmt.Sprintf(" reason=%q", e.Reason)
	}
	return s
}

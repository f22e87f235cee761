//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"kvpn/ctl"
	"kvpn/internal/cli"
	"kvpn/server"
)

// ctlCommand is `vpnd ctl`: one request to the control socket, the reply
// as a table (or JSON with --json). A refused request (an unknown user, a
// failed reload) is an error: exit code 1.
func ctlCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ctl", stderr)
	socket := fs.String("socket", "", "control socket `path` (default: the config's ctl-socket, else "+ctl.DefaultSocket+")")
	config := fs.String("config", "", "read ctl-socket from this configuration `file`")
	asJSON := fs.Bool("json", false, "print the reply as JSON")
	words, err := cli.Parse(fs, args)
	if err != nil {
		return usageError{err}
	}
	if len(words) == 0 {
		return usageError{errors.New("no command (commands: " + ctl.CommandList + ")")}
	}
	req, err := ctl.Lookup(words)
	if err != nil {
		return usageError{err}
	}
	path := *socket
	if path == "" && *config != "" {
		cfg, err := server.LoadConfig(*config, server.DefaultStateDir)
		if err != nil {
			return err
		}
		path = cfg.CtlSocket
	}
	if path == "" {
		path = ctl.DefaultSocket
	}
	if ctl.Streaming(req.Command) {
		return streamEvents(path, req, *asJSON, stdout) // issue #15 (ctlops.go)
	}
	rep, err := ctl.Call(path, req)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	for _, w := range rep.Warn {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if *asJSON {
		return nil
	}
	switch req.Command {
	case ctl.CmdShowUsers:
		printUsers(stdout, rep.Users)
	case ctl.CmdShowUser:
		for i, u := range rep.Users {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			printUser(stdout, u)
		}
	case ctl.CmdShowStats:
		printStats(stdout, rep.Stats)
	default:
		if !printOps(stdout, req.Command, rep) {
			fmt.Fprintln(stdout, rep.Message)
		}
	}
	return nil
}

// transport is the TRANSPORT column: which channel carries the data and
// its cipher suite.
func transport(u ctl.User) string {
	switch u.Transport {
	case server.TransportDTLS:
		return "DTLS " + strings.TrimPrefix(u.DTLS, "dtls/")
	case server.TransportTLS:
		return u.TLS
	}
	return "- (reconnecting)"
}

// recordLayer is the RECORD-LAYER column: kernel or userspace TLS per
// direction, and whether kvpn's DTLS fast path carries the data.
func recordLayer(u ctl.User) string {
	if !u.Connected {
		return "-"
	}
	s := "tls tx=" + u.TLSTX + " rx=" + u.TLSRX
	if u.DTLSFastPath {
		s += ", dtls fast path"
	}
	return s
}

func uptime(sec int64) string {
	return (time.Duration(sec) * time.Second).String()
}

func printUsers(w io.Writer, us []ctl.User) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tADDRESS\tREMOTE\tTRANSPORT\tRECORD-LAYER\tBYTES-IN\tBYTES-OUT\tPKTS-IN\tPKTS-OUT\tUPTIME")
	for _, u := range us {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", u.ID, u.User, orDash(u.Address), u.Remote,
			transport(u), recordLayer(u), u.BytesIn, u.BytesOut, u.PacketsIn, u.PacketsOut, uptime(u.UptimeSeconds))
	}
	tw.Flush()
}

func printUser(w io.Writer, u ctl.User) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	row("id", u.ID)
	row("user", u.User)
	row("address", orDash(u.Address))
	row("remote", u.Remote)
	row("connected", u.Connected)
	row("transport", transport(u))
	row("tls", orDash(u.TLS))
	row("tls record layer", fmt.Sprintf("tx=%s rx=%s", orDash(u.TLSTX), orDash(u.TLSRX)))
	row("dtls", orDash(u.DTLS))
	row("dtls remote", orDash(u.DTLSRemote))
	row("dtls fast path", u.DTLSFastPath)
	row("bytes in/out", fmt.Sprintf("%d / %d", u.BytesIn, u.BytesOut))
	row("packets in/out", fmt.Sprintf("%d / %d", u.PacketsIn, u.PacketsOut))
	row("since", u.Since.UTC().Format(time.RFC3339))
	row("uptime", uptime(u.UptimeSeconds))
	tw.Flush()
}

func printStats(w io.Writer, st *ctl.Stats) {
	if st == nil {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	row("uptime", uptime(st.UptimeSeconds))
	row("sessions", st.Sessions)
	row("connected", st.Connected)
	for _, t := range []string{server.TransportDTLS, server.TransportTLS, server.TransportNone} {
		name := t
		if t == server.TransportNone {
			name = "reconnecting"
		}
		row("  "+name, st.ByTransport[t])
	}
	row("logins", st.Logins)
	row("login failures", st.LoginFailures)
	row("login throttled", st.LoginThrottled)
	row("bytes in/out", fmt.Sprintf("%d / %d", st.BytesIn, st.BytesOut))
	row("packets in/out", fmt.Sprintf("%d / %d", st.PacketsIn, st.PacketsOut))
	row("dtls fallback packets", st.DTLSFallback)
	fmt.Fprintln(tw, "drops:")
	for _, r := range sortedKeys(st.Drops) {
		row("  "+r, st.Drops[r])
	}
	fmt.Fprintln(tw, "panics recovered:")
	for _, r := range sortedKeys(st.Panics) {
		row("  "+r, st.Panics[r])
	}
	fmt.Fprintln(tw, "read errors:")
	for _, r := range sortedKeys(st.ReadErrors) {
		row("  "+r, st.ReadErrors[r])
	}
	tw.Flush()
}

func sortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Package ctl is vpnd's control socket, the counterpart of ocserv's
// occtl socket: a Unix stream socket (mode 0600, so only root or vpnd's
// own user may use it) where `vpnd ctl` lists sessions, shows counters,
// disconnects users and asks for a configuration reload.
//
// The protocol is one JSON request per connection and one JSON reply:
//
//	{"command":"show user","args":["alice"]}
//	{"ok":true,"users":[{"id":3,"user":"alice",...}]}
//
// A request that is malformed, too large or names an unknown command gets
// a reply with ok=false and an error that says what is wrong; the server
// keeps running either way.
package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MaxRequest bounds a request's size in bytes.
const MaxRequest = 4096

// Commands and the number of arguments each takes.
const (
	CmdShowUsers      = "show users"
	CmdShowUser       = "show user"
	CmdShowStats      = "show stats"
	CmdDisconnectUser = "disconnect user"
	CmdDisconnectID   = "disconnect id"
	CmdReload         = "reload"
)

var commands = map[string]int{
	CmdShowUsers:      0,
	CmdShowUser:       1,
	CmdShowStats:      0,
	CmdDisconnectUser: 1,
	CmdDisconnectID:   1,
	CmdReload:         0,
}

// CommandList names the commands for usage and error messages.
const CommandList = "show users, show user NAME, show stats, show status, show sessions, show id ID, show iroutes, show events, " +
	"show ip bans, show ip ban points, unban ip ADDR, disconnect user NAME, disconnect id ID, reload"

// Request is what `vpnd ctl` sends.
type Request struct {
	Command string   `json:"command"`
	Args    []string `json:"args,omitempty"`
}

// Reply is the server's answer. OK=false carries Error; otherwise the
// field the command fills.
type Reply struct {
	OK      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"`
	Message string   `json:"message,omitempty"` // disconnect, reload: what was done
	Users   []User   `json:"users,omitempty"`
	Stats   *Stats   `json:"stats,omitempty"`
	Warn    []string `json:"warnings,omitempty"` // reload: keys that need a restart
	// Issue #15 (ops.go).
	Status  *Status  `json:"status,omitempty"`
	Bans    []Ban    `json:"bans,omitempty"`
	IRoutes []IRoute `json:"iroutes,omitempty"`
	Event   *Event   `json:"event,omitempty"`
}

// Errorf builds an error reply.
func Errorf(format string, a ...any) Reply {
	return Reply{Error: fmt.Sprintf(format, a...)}
}

// User is one session, as `show users` lists it.
type User struct {
	ID            uint64    `json:"id"`
	User          string    `json:"user"`
	Address       string    `json:"address"` // tunnel address
	Remote        string    `json:"remote"`  // client's address (TLS peer)
	DTLSRemote    string    `json:"dtls_remote,omitempty"`
	Connected     bool      `json:"connected"`        // false while waiting for a reconnect
	Transport     string    `json:"transport"`        // "DTLS", "TLS" or "-" (detached)
	TLS           string    `json:"tls,omitempty"`    // "TLS 1.3 TLS_AES_128_GCM_SHA256"
	DTLS          string    `json:"dtls,omitempty"`   // "AES128-GCM" when up
	TLSTX         string    `json:"tls_tx,omitempty"` // record layer: "kernel" or "userspace"
	TLSRX         string    `json:"tls_rx,omitempty"` //
	DTLSFastPath  bool      `json:"dtls_fast_path"`   // kvpn's DTLS record layer carries the data
	BytesIn       uint64    `json:"bytes_in"`         // from the client
	BytesOut      uint64    `json:"bytes_out"`        // to the client
	PacketsIn     uint64    `json:"packets_in"`
	PacketsOut    uint64    `json:"packets_out"`
	Since         time.Time `json:"since"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	// Issue #15: show sessions, show id.
	Group    string   `json:"group,omitempty"`
	Address6 string   `json:"address6,omitempty"`
	IRoutes  []string `json:"iroutes,omitempty"`
}

// Stats are the server's counters, as `show stats` shows them.
type Stats struct {
	Sessions       int               `json:"sessions"`
	Connected      int               `json:"connected"`
	ByTransport    map[string]int    `json:"by_transport"`
	Logins         uint64            `json:"logins"`
	LoginFailures  uint64            `json:"login_failures"`
	LoginThrottled uint64            `json:"login_throttled"`
	Drops          map[string]uint64 `json:"drops"`
	BytesIn        uint64            `json:"bytes_in"`
	BytesOut       uint64            `json:"bytes_out"`
	PacketsIn      uint64            `json:"packets_in"`
	PacketsOut     uint64            `json:"packets_out"`
	UptimeSeconds  int64             `json:"uptime_seconds"`
	// Panics are the panics recovered, by goroutine; ReadErrors the
	// failed reads of the shared readers, by source; DTLSFallback the
	// packets meant for DTLS that went over TLS.
	Panics       map[string]uint64 `json:"panics,omitempty"`
	ReadErrors   map[string]uint64 `json:"read_errors,omitempty"`
	DTLSFallback uint64            `json:"dtls_fallback_packets"`
}

// ParseRequest decodes and checks one request: a single JSON object with
// known fields only, a known command and the right number of arguments.
func ParseRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequest {
		return r, fmt.Errorf("request too large (%d bytes, at most %d)", len(data), MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("malformed request: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Request{}, errors.New("malformed request: data after the JSON object")
	}
	want, ok := commands[r.Command]
	if !ok {
		return Request{}, fmt.Errorf("unknown command %q (commands: %s)", r.Command, CommandList)
	}
	if len(r.Args) != want {
		return Request{}, fmt.Errorf("%s: want %d argument(s), got %d", r.Command, want, len(r.Args))
	}
	if r.Command == CmdDisconnectID {
		if _, err := ParseID(r.Args[0]); err != nil {
			return Request{}, err
		}
	}
	if err := checkOpsArgs(r); err != nil {
		return Request{}, err
	}
	for _, a := range r.Args {
		if a == "" || strings.ContainsAny(a, "\x00\n") {
			return Request{}, fmt.Errorf("%s: bad argument %q", r.Command, a)
		}
	}
	return r, nil
}

// ParseID parses a session id as `show users` prints it.
func ParseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("bad session id %q (want a number as in show users)", s)
	}
	return id, nil
}

// Lookup turns command-line words ("show", "user", "alice") into a
// request, matching the longest command the words start with.
func Lookup(words []string) (Request, error) {
	for n := min(4, len(words)); n > 0; n-- {
		cmd := strings.Join(words[:n], " ")
		if _, ok := commands[cmd]; ok {
			r := Request{Command: cmd, Args: words[n:]}
			if len(r.Args) == 0 {
				r.Args = nil
			}
			data, _ := json.Marshal(r)
			return ParseRequest(data)
		}
	}
	return Request{}, fmt.Errorf("unknown command %q (commands: %s)", strings.Join(words, " "), CommandList)
}

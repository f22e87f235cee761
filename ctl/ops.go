package ctl

// Issue #15: occtl's views (show status, sessions, iroutes, events, id)
// and the ban commands.

import (
	"fmt"
	"net/netip"
	"time"
)

// Commands of issue #15.
const (
	CmdShowStatus      = "show status"
	CmdShowSessions    = "show sessions"
	CmdShowIRoutes     = "show iroutes"
	CmdShowEvents      = "show events" // a stream: see Stream
	CmdShowID          = "show id"
	CmdShowIPBans      = "show ip bans"
	CmdShowIPBanPoints = "show ip ban points"
	CmdUnbanIP         = "unban ip"
)

func init() {
	for cmd, n := range map[string]int{
		CmdShowStatus: 0, CmdShowSessions: 0, CmdShowIRoutes: 0, CmdShowEvents: 0, CmdShowID: 1,
		CmdShowIPBans: 0, CmdShowIPBanPoints: 0, CmdUnbanIP: 1,
	} {
		commands[cmd] = n
	}
}

// checkOpsArgs checks the arguments of issue #15's commands.
func checkOpsArgs(r Request) error {
	switch r.Command {
	case CmdShowID:
		_, err := ParseID(r.Args[0])
		return err
	case CmdUnbanIP:
		if _, err := netip.ParseAddr(r.Args[0]); err != nil {
			return fmt.Errorf("unban ip: bad address %q (want an IPv4 or IPv6 address)", r.Args[0])
		}
	}
	return nil
}

// Streaming reports whether cmd's reply is a stream of replies.
func Streaming(cmd string) bool { return cmd == CmdShowEvents }

// Status is `show status`: the server at a glance.
type Status struct {
	NodeName      string    `json:"node_name,omitempty"`
	PID           int       `json:"pid"`
	Started       time.Time `json:"started"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	Sessions      int       `json:"sessions"`
	Connected     int       `json:"connected"`
	Resumable     int       `json:"resumable"` // sessions without a connection, kept for a reconnect
	DTLS          int       `json:"dtls"`      // sessions whose data goes over DTLS
	KTLSTX        int       `json:"ktls_tx"`   // connected sessions whose TLS sends are kernel TLS
	KTLSRX        int       `json:"ktls_rx"`   // ... and receives
	BytesIn       uint64    `json:"bytes_in"`
	BytesOut      uint64    `json:"bytes_out"`
	PacketsIn     uint64    `json:"packets_in"`
	PacketsOut    uint64    `json:"packets_out"`
	Logins        uint64    `json:"logins"`
	LoginFailures uint64    `json:"login_failures"`
	// LoginConnections are the connections that have not logged in now.
	LoginConnections int `json:"login_connections"`
	BannedAddresses  int `json:"banned_addresses"`
	ScoredAddresses  int `json:"scored_addresses"` // addresses with ban points
	IRoutes          int `json:"iroutes"`          // iroutes with a session
}

// Ban is one address's ban score.
type Ban struct {
	Address string    `json:"address"` // an IPv4 address or an IPv6 /64
	Score   int       `json:"score"`
	Banned  bool      `json:"banned"`
	Since   time.Time `json:"since"`   // first point of the score
	Expires time.Time `json:"expires"` // end of the ban, or when the score resets
}

// IRoute is one network behind a site-to-site user.
type IRoute struct {
	Network   string `json:"network"`
	User      string `json:"user"`
	ID        uint64 `json:"id,omitempty"` // its session, 0 if none
	Connected bool   `json:"connected"`
}

// Event types of `show events`.
const (
	EventConnect    = "connect"    // a tunnel came up (login or reconnect)
	EventDisconnect = "disconnect" // a tunnel's connection ended; the session may be resumed
	EventEnd        = "end"        // a session ended and freed its addresses
)

// Event is one line of `show events`.
type Event struct {
	Time            time.Time `json:"time"`
	Type            string    `json:"type"`
	ID              uint64    `json:"id"`
	User            string    `json:"user"`
	Address         string    `json:"address,omitempty"`
	Address6        string    `json:"address6,omitempty"`
	Remote          string    `json:"remote,omitempty"`
	Transport       string    `json:"transport,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	BytesIn         uint64    `json:"bytes_in,omitempty"`
	BytesOut        uint64    `json:"bytes_out,omitempty"`
	DurationSeconds int64     `json:"duration_seconds,omitempty"`
}

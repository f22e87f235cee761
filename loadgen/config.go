package loadgen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Config is one load run. Names follow openconnect's options where they
// fit (--servercert, --cafile, --user, --no-dtls).
type Config struct {
	Server     *url.URL // https://HOST[:PORT]
	ServerCert string   // pin: sha256:... or pin-sha256:... (certs.ParsePin)
	CAFile     string

	// User is every session's user name, unless UserFormat (e.g.
	// "user%d", numbered from 1) is set.
	User       string
	UserFormat string
	Password   string

	Sessions int
	// Parallel bounds the logins in flight at once; Rate, if > 0, bounds
	// logins started per second.
	Parallel int
	Rate     float64
	// Duration is how long sessions are held once the ramp is over; 0
	// holds them until the context ends.
	Duration time.Duration

	NoDTLS    bool
	LocalAddr netip.Addr // source address for TCP and UDP; invalid = any

	// ChurnMin..ChurnMax, if ChurnMax > 0, is the lifetime of a session
	// (uniformly drawn): it then disconnects and a new login replaces it.
	ChurnMin, ChurnMax time.Duration

	// PPS packets per second of Size bytes of ICMP echo per session, to
	// PingTarget (default: the server's tunnel address, network + 1).
	PPS        float64
	Size       int
	PingTarget netip.Addr

	// NoDisconnect ends sessions at exit without sending DISCONNECT.
	NoDisconnect bool

	// Progress, if set, gets a progress line once a second.
	Progress io.Writer
	Log      *slog.Logger
	// Stats, if set, receives the run's live counters (a caller's own
	// display, tests); else Run keeps its own.
	Stats *Stats
}

// DefaultParallel is the default bound on logins in flight.
const DefaultParallel = 64

// DefaultSize is the default echo packet size (IPv4 header included).
const DefaultSize = 100

// maxPacket bounds Size: the tunnel MTU the generator asks for.
const maxPacket = requestMTU

func (c *Config) check() error {
	if c.Server == nil || c.Server.Hostname() == "" {
		return errors.New("loadgen: no server")
	}
	if c.Sessions < 1 {
		return errors.New("loadgen: sessions must be at least 1")
	}
	if c.User == "" && c.UserFormat == "" {
		return errors.New("loadgen: no user (--user or --user-format)")
	}
	if c.UserFormat != "" && strings.Count(c.UserFormat, "%d") != 1 {
		return fmt.Errorf("loadgen: user format %q must contain one %%d", c.UserFormat)
	}
	if c.Parallel <= 0 {
		c.Parallel = DefaultParallel
	}
	if c.ChurnMax > 0 && (c.ChurnMin <= 0 || c.ChurnMin > c.ChurnMax) {
		return errors.New("loadgen: churn needs 0 < min <= max")
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.PPS > 0 && (c.Size < minEchoPacket || c.Size > maxPacket) {
		return fmt.Errorf("loadgen: size %d outside %d..%d", c.Size, minEchoPacket, maxPacket)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// user is the user name of slot i (0-based).
func (c *Config) user(i int) string {
	if c.UserFormat != "" {
		return fmt.Sprintf(c.UserFormat, i+1)
	}
	return c.User
}

func (c *Config) hostPort() string {
	if c.Server.Port() == "" {
		return c.Server.Hostname()
	}
	return c.Server.Host
}

func (c *Config) addr() string {
	port := c.Server.Port()
	if port == "" {
		port = "443"
	}
	return c.Server.Hostname() + ":" + port
}

//go:build linux

// Command kvpnload is kvpn's load generator: it runs N OpenConnect
// sessions from one process, without TUN devices, against a vpnd or a
// stock ocserv, and reports sessions up, logins per second, DTLS share,
// failures by reason and latency percentiles (package loadgen).
//
//	kvpnload [flags] https://HOST[:PORT]
//
// Exit codes: 0 every requested session came up, 1 some did not, 2 usage.

// OpenConnect's DTLS key is a TLS exporter; Go refuses it over TLS 1.2
// without extended master secret, which ocserv's %COMPAT disables (see
// dtls.PSK).
//
//go:debug tlsunsafeekm=1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvpn/client"
	"kvpn/internal/cli"
	"kvpn/internal/logging"
	"kvpn/loadgen"
)

const usage = `usage: kvpnload [flags] https://HOST[:PORT]

server (named as openconnect's):
      --servercert PIN       accept only a server certificate with this pin-sha256:...
      --cafile FILE          trust the CA certificates in FILE
users:
  -u, --user NAME            every session logs in as NAME
      --user-format FMT      session i (1..N) logs in as fmt.Sprintf(FMT, i), e.g. user%d
      --password PW          the password of every user
      --password-file FILE   read the password from the first line of FILE
load:
      --sessions N           sessions to hold (default 1)
      --parallel P           logins in flight at once (default 64)
      --rate R               logins started per second (default: unlimited)
      --duration D           hold time after the ramp, e.g. 60s (0: until SIGINT; default 0)
      --churn MIN,MAX        soak: each session lives a random time in [MIN,MAX], then
                             sends DISCONNECT and a new login replaces it
      --no-dtls              TLS only
      --local-addr IP        source address of every TCP and UDP socket
traffic:
      --pps N                ICMP echo requests per second per session (default 0: none)
      --size N               echo packet size in bytes, IPv4 header included (default 100)
      --ping-target IP       echo destination (default: the server's tunnel address,
                             the first host of the pushed network)
output:
      --json FILE            write the summary as JSON to FILE ("-": stdout)
      --quiet                no progress line and no text summary
      --no-disconnect        end sessions at exit without DISCONNECT
      --log-level L          debug, info (default), warn, error: per-session failures at debug
`

// fdReserve is the descriptors the process holds besides its sessions'
// sockets: stdin/out/err, the runtime's epoll and wakeup descriptors, the
// --json and --password-file files, with room to spare.
const fdReserve = 16

// fileLimit is the RLIMIT_NOFILE asked for: a TCP and a UDP socket per
// session, plus fdReserve.
func fileLimit(sessions int) uint64 { return uint64(2*sessions + fdReserve) }

func main() { cli.Main("kvpnload", run) }

func run(args []string, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(stderr, usage)
			return 0
		}
		fmt.Fprintf(stderr, "kvpnload: %v\n", err)
		return 2
	}
	want := fileLimit(o.cfg.Sessions)
	if got, err := loadgen.RaiseFileLimit(want); err != nil {
		// Without CAP_SYS_RESOURCE the hard limit stays (20000 on the
		// project's test machine: 9992 sessions with DTLS per process).
		most := uint64(0)
		if got > fdReserve {
			most = (got - fdReserve) / 2
		}
		fmt.Fprintf(stderr, "kvpnload: cannot raise RLIMIT_NOFILE to %d (%v): the limit is %d, enough for about %d sessions with DTLS; run several kvpnload processes beyond that\n", want, err, got, most)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := loadgen.Run(ctx, o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kvpnload: %v\n", err)
		return 2
	}
	if !o.quiet {
		sum.WriteText(stderr)
	}
	if o.json != "" {
		if err := writeJSON(o.json, sum); err != nil {
			fmt.Fprintf(stderr, "kvpnload: %v\n", err)
			return 2
		}
	}
	if sum.MaxUp < int64(o.cfg.Sessions) {
		return 1
	}
	return 0
}

func writeJSON(path string, sum *loadgen.Summary) error {
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

type options struct {
	cfg   *loadgen.Config
	json  string
	quiet bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("kvpnload", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := &loadgen.Config{}
	o := &options{cfg: cfg}
	var passwordFile, duration, churn, localAddr, pingTarget, level string
	for _, n := range []string{"u", "user"} {
		fs.StringVar(&cfg.User, n, "", "")
	}
	fs.StringVar(&cfg.UserFormat, "user-format", "", "")
	fs.StringVar(&cfg.Password, "password", "", "")
	fs.StringVar(&passwordFile, "password-file", "", "")
	fs.StringVar(&cfg.ServerCert, "servercert", "", "")
	fs.StringVar(&cfg.CAFile, "cafile", "", "")
	fs.IntVar(&cfg.Sessions, "sessions", 1, "")
	fs.IntVar(&cfg.Parallel, "parallel", loadgen.DefaultParallel, "")
	fs.Float64Var(&cfg.Rate, "rate", 0, "")
	fs.StringVar(&duration, "duration", "0", "")
	fs.StringVar(&churn, "churn", "", "")
	fs.BoolVar(&cfg.NoDTLS, "no-dtls", false, "")
	fs.StringVar(&localAddr, "local-addr", "", "")
	fs.Float64Var(&cfg.PPS, "pps", 0, "")
	fs.IntVar(&cfg.Size, "size", loadgen.DefaultSize, "")
	fs.StringVar(&pingTarget, "ping-target", "", "")
	fs.StringVar(&o.json, "json", "", "")
	fs.BoolVar(&o.quiet, "quiet", false, "")
	fs.BoolVar(&cfg.NoDisconnect, "no-disconnect", false, "")
	fs.StringVar(&level, "log-level", "info", "")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%v (see kvpnload --help)", err)
	}
	if len(pos) != 1 {
		return nil, errors.New("want exactly one server URL (see kvpnload --help)")
	}
	if cfg.Server, err = client.ParseServerURL(pos[0]); err != nil {
		return nil, err
	}
	if cfg.User != "" && cfg.UserFormat != "" {
		return nil, errors.New("--user and --user-format exclude each other")
	}
	if passwordFile != "" {
		if cfg.Password != "" {
			return nil, errors.New("--password and --password-file exclude each other")
		}
		f, err := os.Open(passwordFile)
		if err != nil {
			return nil, err
		}
		cfg.Password, err = cli.ReadLine(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--password-file: %v", err)
		}
	}
	if cfg.Duration, err = parseDuration(duration); err != nil {
		return nil, fmt.Errorf("--duration: %v", err)
	}
	if churn != "" {
		lo, hi, ok := strings.Cut(churn, ",")
		if !ok {
			return nil, errors.New("--churn wants MIN,MAX (e.g. 30s,120s)")
		}
		if cfg.ChurnMin, err = parseDuration(lo); err == nil {
			cfg.ChurnMax, err = parseDuration(hi)
		}
		if err != nil || cfg.ChurnMin <= 0 || cfg.ChurnMin > cfg.ChurnMax {
			return nil, errors.New("--churn wants 0 < MIN <= MAX (e.g. 30s,120s)")
		}
	}
	if localAddr != "" {
		if cfg.LocalAddr, err = netip.ParseAddr(localAddr); err != nil {
			return nil, fmt.Errorf("--local-addr: %v", err)
		}
	}
	if pingTarget != "" {
		if cfg.PingTarget, err = netip.ParseAddr(pingTarget); err != nil || !cfg.PingTarget.Is4() {
			return nil, fmt.Errorf("--ping-target wants an IPv4 address")
		}
	}
	if cfg.Sessions < 1 || cfg.Parallel < 1 || cfg.Rate < 0 || cfg.PPS < 0 {
		return nil, errors.New("--sessions and --parallel must be at least 1, --rate and --pps not negative")
	}
	if cfg.Log, err = logging.New(stderr, level); err != nil {
		return nil, err
	}
	if !o.quiet {
		cfg.Progress = stderr
	}
	return o, nil
}

// parseDuration takes a Go duration ("90s", "2m") or a bare number of
// seconds, as openconnect's time options are.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 {
			return 0, errors.New("negative")
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		return 0, errors.New("negative")
	}
	return d, err
}

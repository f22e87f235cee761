//go:build linux

// Command vpnd is the kvpn server daemon: it serves OpenConnect clients
// (stock openconnect and kvpn's vpnc) over TLS.
//
//	vpnd serve  [--config FILE] [--state-dir DIR]
//	vpnd passwd [--file FILE] [--delete] USER
//	vpnd pin    --cert FILE
//	vpnd check  --config FILE
//	vpnd ctl    [--socket PATH] [--json] COMMAND

// OpenConnect's DTLS key is a TLS exporter; Go refuses it over TLS 1.2
// without extended master secret, which GnuTLS's %COMPAT disables (see
// dtls.PSK).
//
//go:debug tlsunsafeekm=1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"kvpn/auth"
	"kvpn/certs"
	"kvpn/ctl"
	"kvpn/internal/cli"
	"kvpn/internal/logging"
	"kvpn/metrics"
	"kvpn/server"
)

const usage = `usage:
  vpnd serve  [--config FILE] [--state-dir DIR]   run the server (built-in defaults without --config)
  vpnd passwd [--file FILE] [--delete] USER        set (or delete) a user's password
  vpnd pin    --cert FILE                          print a certificate's pin-sha256
  vpnd check  --config FILE                        validate a configuration file
  vpnd ctl    [--socket PATH] [--json] COMMAND     talk to a running vpnd (like occtl):
              show users | show user NAME | show stats | show status |
              show sessions | show id ID | show iroutes | show events |
              show ip bans | show ip ban points | unban ip ADDR |
              disconnect user NAME | disconnect id ID | reload
`

// exitUsage is the exit code for bad flags or arguments.
const exitUsage = 2

func main() { cli.Main("vpnd", run) }

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serve(args, stderr)
	case "passwd":
		err = passwd(args, stderr)
	case "pin":
		err = pin(args, stderr)
	case "check":
		err = check(args, stderr)
	case "ctl":
		err = ctlCommand(args, os.Stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vpnd: unknown command %q\n%s", cmd, usage)
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vpnd %s: %v\n", cmd, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "vpnd %s: %v\n", cmd, err)
		return 1
	}
}

type usageError struct{ error }

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vpnd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string, nargs int) ([]string, error) {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return nil, usageError{err}
	}
	if len(pos) != nargs {
		return nil, usageError{fmt.Errorf("want %d argument(s), got %d", nargs, len(pos))}
	}
	return pos, nil
}

func loadConfig(path, stateDir string) (*server.Config, error) {
	if path == "" {
		cfg := server.DefaultConfig(stateDir)
		return cfg, cfg.Validate()
	}
	return server.LoadConfig(path, stateDir)
}

func serve(args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	config := fs.String("config", "", "TOML configuration `file` (default: built-in defaults)")
	stateDir := fs.String("state-dir", server.DefaultStateDir, "`directory` for the generated certificate and the default password file")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(*config, *stateDir)
	if err != nil {
		return err
	}
	log, err := logging.NewFormat(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	raiseFileLimit(log)
	ra, err := lookupRunAs(cfg) // a missing user stops vpnd before it touches anything
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg.PasswdFile); cfg.UsesPasswdFile() && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("password file %s does not exist; add a user with: vpnd passwd --file %s USER", cfg.PasswdFile, cfg.PasswdFile)
	}
	// The control socket comes first: if another vpnd answers on it, this
	// one must not touch the TUN device or the ports.
	var ctlLn *ctl.Listener
	if cfg.CtlSocket != "" {
		if ctlLn, err = ctl.Listen(cfg.CtlSocket); err != nil {
			return fmt.Errorf("%w (set ctl-socket to another path, or \"\" to disable it)", err)
		}
		defer ctlLn.Close()
		if err := setCtlGroup(ctlLn, cfg, log); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	srv.SetConfigSource(func() (*server.Config, error) { return loadConfig(*config, *stateDir) })
	log.Info("certificate pin", "pin", srv.Pin)
	ln, err := server.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	if cfg.MetricsListen != "" {
		ms, err := metrics.Listen(cfg.MetricsListen, cfg.MetricsToken, srv.Snapshot, log)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics-listen %s: %w", cfg.MetricsListen, err)
		}
		defer ms.Close()
		log.Info("metrics listening", "metrics-listen", ms.Addr().String())
	}
	// Everything is open: from here on vpnd runs as run-as-user.
	if ra != nil {
		if err := prepareState(cfg, ra, log); err != nil {
			return err
		}
		if err := dropPrivileges(ra, cfg, *config, log); err != nil {
			return err
		}
	}
	if ctlLn != nil {
		go ctlLn.Serve(srv, log)
		log.Info("control socket listening", "ctl-socket", ctlLn.Path())
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			log.Info("SIGHUP: reloading the configuration")
			srv.ReloadFromSource() // logs what it did, or why it kept the old one
		}
	}()
	// systemd (Type=notify): ready, and watchdog pings while the server
	// answers a snapshot (which takes its session lock).
	notifyReady(log, func() bool { srv.Snapshot(); return true }, ctx.Done())
	err = srv.Serve(ctx, ln)
	log.Info("vpnd stopped", "drop-spoofed", srv.Counters.DropSpoofed.Load(),
		"drop-no-session", srv.Counters.DropNoSession.Load(), "login-failures", srv.Counters.LoginFailures.Load())
	return err
}

func passwd(args []string, stderr io.Writer) error {
	fs := newFlags("passwd", stderr)
	file := fs.String("file", filepath.Join(server.DefaultStateDir, "passwd"), "password `file`")
	del := fs.Bool("delete", false, "delete the user instead of setting a password")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	user := pos[0]
	if *del {
		return auth.DeleteUser(*file, user)
	}
	if err := os.MkdirAll(filepath.Dir(*file), 0o700); err != nil {
		return err
	}
	pw, err := cli.ReadPassword("Enter password for "+user+": ", true)
	if err != nil {
		return err
	}
	if pw == "" {
		return errors.New("empty password")
	}
	return auth.SetPassword(*file, user, pw)
}

func pin(args []string, stderr io.Writer) error {
	fs := newFlags("pin", stderr)
	cert := fs.String("cert", "", "PEM certificate `file`")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *cert == "" {
		return usageError{errors.New("--cert is required")}
	}
	data, err := os.ReadFile(*cert)
	if err != nil {
		return err
	}
	leaf, err := certs.ParseLeaf(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *cert, err)
	}
	fmt.Println(certs.Pin(leaf))
	return nil
}

func check(args []string, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	config := fs.String("config", "", "TOML configuration `file`")
	stateDir := fs.String("state-dir", server.DefaultStateDir, "state `directory` for defaults")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *config == "" {
		return usageError{errors.New("--config is required")}
	}
	if _, err := server.LoadConfig(*config, *stateDir); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s: configuration OK\n", *config)
	return nil
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit, as a
// daemon holding a socket per client should: the soft limit is often 1024,
// which max-login-connections alone could reach. Go's runtime does the same
// at start since Go 1.19; doing it here too makes the limit vpnd runs with
// explicit, and logged.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("reading the open file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("raising the open file limit", "err", err)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	log.Debug("open file limit", "soft", lim.Cur, "hard", lim.Max)
}

//go:build linux

package harness

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kvpn/certs"
)

// OcservRun says how StartOcserv runs a stock ocserv.
type OcservRun struct {
	// Config is the ocserv.conf. Dir and ListenHost are required (Dir is
	// made if missing); Cert, Key and RunAs are filled in, and an empty
	// AuthLine becomes plain authentication with Users' password file.
	Config OcservConfig
	// Users are written with ocpasswd into Dir/passwd, each with Password.
	Users    []string
	Password string
	// Args are more ocserv arguments ("--debug", "2").
	Args []string
	// Proc is how the process runs; its Args are StartOcserv's.
	Proc ProcSpec
}

// Ocserv is a stock ocserv running in a namespace.
type Ocserv struct {
	Proc *Proc
	// Pin is the certificate's pin-sha256, as openconnect's --servercert
	// takes it.
	Pin         string
	OcctlSocket string
}

// StartOcserv writes a certificate for the listen address, the password
// file and the config into r.Config.Dir (its sockets and pid file go there
// too), starts ocserv in the foreground in ns, and waits until it listens
// on ListenHost:443. c's cleanup stops it.
func StartOcserv(ctx context.Context, c Cleaner, ns *NS, r OcservRun) (*Ocserv, error) {
	cfg := r.Config
	if err := os.MkdirAll(cfg.Dir, 0o711); err != nil {
		return nil, err
	}
	cfg.RunAs = OcservUser()
	if cfg.RunAs != "root" {
		// ocserv's workers run as run-as-user and connect to sec-mod's
		// socket in Dir: without search permission on the directories
		// above it they fail with "error connecting to sec-mod socket ...
		// Permission denied". (The key stays 0600, read by root.)
		for d := cfg.Dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o711); err != nil {
				return nil, err
			}
		}
	}
	var pin string
	var err error
	cfg.Cert, cfg.Key, pin, err = WriteSelfSigned(cfg.Dir, cfg.ListenHost)
	if err != nil {
		return nil, err
	}
	passwd := filepath.Join(cfg.Dir, "passwd")
	for _, u := range r.Users {
		pw := r.Password + "\n" + r.Password + "\n"
		if out, err := (*NS)(nil).Run(ctx, Exec{Args: []string{"ocpasswd", "-c", passwd, u}, Stdin: pw, Timeout: 10 * time.Second}); err != nil {
			return nil, fmt.Errorf("ocpasswd: %v: %s", err, out)
		}
	}
	if cfg.AuthLine == "" {
		cfg.AuthLine = fmt.Sprintf(`auth = "plain[passwd=%s]"`, passwd)
	}
	cfgPath := filepath.Join(cfg.Dir, "ocserv.conf")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	spec := r.Proc
	spec.Name = cmp.Or(spec.Name, "ocserv")
	spec.Args = append([]string{"ocserv", "--foreground", "--config", cfgPath}, r.Args...)
	p, err := ns.Start(c, spec)
	if err != nil {
		return nil, err
	}
	host := cfg.ListenHost
	err = Eventually(ctx, 10*time.Second, "ocserv listening on "+host+":443", func() error {
		if p.Exited() {
			return nil // said below
		}
		out, err := ns.Run(ctx, Exec{Args: []string{"ss", "-Hltn", "src", host, "sport", "=", ":443"}, Timeout: 5 * time.Second})
		if err != nil {
			return fmt.Errorf("ss: %v: %s", err, out)
		}
		if !strings.Contains(out, "LISTEN") {
			return fmt.Errorf("not listening yet")
		}
		return nil
	})
	if err == nil && p.Exited() {
		err = fmt.Errorf("ocserv exited (%v): %s", p.Err(), Tail(p.Out.String(), 20))
	}
	if err != nil {
		return nil, err
	}
	return &Ocserv{Proc: p, Pin: pin, OcctlSocket: cfg.OcctlSocket()}, nil
}

// WriteSelfSigned writes a fresh self-signed certificate for host and its
// key to dir/cert.pem and dir/key.pem, and returns the paths and the
// certificate's pin-sha256.
func WriteSelfSigned(dir, host string) (certPath, keyPath, pin string, err error) {
	cert, err := certs.SelfSigned(host, 24*time.Hour, nil)
	if err != nil {
		return "", "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := certs.WritePEM(cert, certPath, keyPath); err != nil {
		return "", "", "", err
	}
	return certPath, keyPath, certs.Pin(cert.Leaf), nil
}

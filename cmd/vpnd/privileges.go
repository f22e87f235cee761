//go:build linux

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"kvpn/internal/privdrop"
	"kvpn/server"
)

// keptCaps are the capabilities vpnd keeps after run-as-user: routes
// and addresses it installs on reload (iroutes, route changes) and
// restores at exit. It binds no socket after start-up, so it needs no
// CAP_NET_BIND_SERVICE.
var keptCaps = []uintptr{privdrop.CapNetAdmin}

// runAs is run-as-user and run-as-group resolved.
type runAs struct {
	user, group string
	uid, gid    int
}

// lookupRunAs resolves run-as-user and run-as-group before vpnd touches
// anything, so that a missing user stops it at once with a clear error
// rather than leaving a server running as root. nil without run-as-user.
func lookupRunAs(cfg *server.Config) (*runAs, error) {
	if cfg.RunAsUser == "" {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("run-as-user %q: vpnd runs as uid %d, not root: it cannot switch users (start it as root, or remove run-as-user)",
			cfg.RunAsUser, os.Geteuid())
	}
	if err := privdrop.Supported(); err != nil {
		return nil, fmt.Errorf("run-as-user %q: %w", cfg.RunAsUser, err)
	}
	u, err := user.Lookup(cfg.RunAsUser)
	if err != nil {
		if _, nerr := strconv.Atoi(cfg.RunAsUser); nerr == nil {
			u, err = user.LookupId(cfg.RunAsUser)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("run-as-user %q: %w (create it, e.g. useradd --system --no-create-home --shell /usr/sbin/nologin %s)",
			cfg.RunAsUser, err, cfg.RunAsUser)
	}
	ra := &runAs{user: u.Username}
	if ra.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("run-as-user %q: uid %q: %w", cfg.RunAsUser, u.Uid, err)
	}
	if ra.uid == 0 {
		return nil, fmt.Errorf("run-as-user %q has uid 0: that is root", cfg.RunAsUser)
	}
	gname := cfg.RunAsGroup
	if gname == "" {
		gname = u.Gid
	}
	if ra.gid, err = lookupGroup(gname); err != nil {
		return nil, fmt.Errorf("run-as-group: %w", err)
	}
	if ra.gid == 0 {
		return nil, fmt.Errorf("run-as-group %q has gid 0: that is root's group", gname)
	}
	ra.group = gname
	return ra, nil
}

// lookupGroup resolves a group name or number.
func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			g, err = user.LookupGroupId(name)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// prepareState lets run-as-user keep the revoked-sessions file, which
// vpnd appends to and rewrites (a temporary file renamed over it) while
// it runs: the file's directory (cookie-key-file's) becomes root:group
// mode 1770 (sticky, as /tmp: the user may create files there and
// replace only its own, never the root-owned cookie key, certificate,
// private key or password file), and the file, if present, the user's.
// Everything else vpnd needs from disk it has read already, as root.
func prepareState(cfg *server.Config, ra *runAs, log *slog.Logger) error {
	dir := filepath.Dir(cfg.CookieKeyFile)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("run-as-user: state directory: %w", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		return fmt.Errorf("run-as-user: state directory %s is owned by uid %d, not root; vpnd makes it root:%s mode 1770 itself",
			dir, st.Uid, ra.group)
	}
	if err := os.Chown(dir, 0, ra.gid); err != nil {
		return fmt.Errorf("run-as-user: %w", err)
	}
	if err := os.Chmod(dir, 0o770|fs.ModeSticky); err != nil {
		return fmt.Errorf("run-as-user: %w", err)
	}
	revoked := filepath.Join(dir, server.RevokedFileName)
	if err := os.Lchown(revoked, ra.uid, ra.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("run-as-user: %w", err)
	}
	log.Info("state directory prepared for run-as-user", "dir", dir, "group", ra.group, "mode", "1770", "revoked-sessions-owner", ra.user)
	return nil
}

// dropPrivileges makes vpnd run as ra keeping keptCaps, on every thread,
// and checks the result; any error must stop vpnd. Then it warns about
// the files a reload re-reads that the user cannot read.
func dropPrivileges(ra *runAs, cfg *server.Config, configPath string, log *slog.Logger) error {
	if err := privdrop.Drop(ra.uid, ra.gid, keptCaps...); err != nil {
		return fmt.Errorf("run-as-user %q: dropping privileges: %w", ra.user, err)
	}
	log.Info("running unprivileged", "run-as-user", ra.user, "uid", ra.uid, "run-as-group", ra.group, "gid", ra.gid,
		"capabilities", "cap_net_admin")
	for _, f := range []struct{ key, path string }{
		{"--config", configPath}, {"passwd-file", cfg.PasswdFile}, {"ca-cert", cfg.CACert}, {"crl", cfg.CRL},
	} {
		if f.path == "" {
			continue
		}
		if fh, err := os.Open(f.path); err != nil {
			if f.key == "passwd-file" && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			log.Warn("a reload will fail: run-as-user cannot read this file (chgrp it to run-as-group, mode 0640)",
				"key", f.key, "file", f.path, "err", err)
		} else {
			fh.Close()
		}
	}
	return nil
}

// setCtlGroup applies ctl-group to the control socket (while root).
func setCtlGroup(ln interface{ SetGroup(int) error }, cfg *server.Config, log *slog.Logger) error {
	if cfg.CtlGroup == "" {
		return nil
	}
	gid, err := lookupGroup(cfg.CtlGroup)
	if err != nil {
		return fmt.Errorf("ctl-group: %w", err)
	}
	if err := ln.SetGroup(gid); err != nil {
		return err
	}
	log.Info("control socket open to its group", "ctl-group", cfg.CtlGroup, "gid", gid)
	return nil
}

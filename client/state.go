package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Each vpnc instance keeps its undo records (resolv.conf backup, route
// journal) in a directory of its own under the state directory, named
// after its interface, so two instances on different interfaces do not
// recover (undo) each other's live changes at start. A lock on that
// directory (flock(2) on its "lock" file) stops a second instance on the
// same interface; the kernel drops the lock when its holder dies, however
// it dies, so the next start can take it and recover what the dead run
// left. The lock file stays: removing it would let a starting instance
// lock a file that is no longer the one others open.

// instanceDir is this instance's state directory: <state-dir>/<interface>.
func (o *Options) instanceDir() string {
	name := o.Interface
	if name == "" {
		name = "default"
	}
	return filepath.Join(o.stateDir(), name)
}

// lockInstance creates instanceDir and locks it for this run. A second
// instance on the same interface gets an error naming the interface and
// the directory. unlock releases it.
func (o *Options) lockInstance() (unlock func(), err error) {
	// Linux interface names cannot hold "/" or whitespace and are not
	// "." or ".." (dev_valid_name), but Interface comes from the command
	// line before the kernel sees it.
	if n := o.Interface; n == "." || n == ".." || strings.ContainsAny(n, "/\x00") {
		return nil, fmt.Errorf("invalid interface name %q", n)
	}
	dir := o.instanceDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another vpnc is running on interface %s (it holds the lock in %s); "+
				"use another --interface, or stop the other one first", o.interfaceName(), dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

func (o *Options) interfaceName() string {
	if o.Interface == "" {
		return "(default)"
	}
	return o.Interface
}

//go:build linux

package main

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// sd_notify(3) without libsystemd: a datagram to $NOTIFY_SOCKET (a path,
// or "@name" for the abstract namespace). systemd's Type=notify waits for
// READY=1; WatchdogSec= sets $WATCHDOG_USEC, and the service must send
// WATCHDOG=1 more often than that or be restarted.

// sdNotify sends state to systemd; false when not run by systemd with
// NOTIFY_SOCKET, or if the send failed.
func sdNotify(state string) bool {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err == nil
}

// watchdogInterval is half of $WATCHDOG_USEC when it is meant for this
// process ($WATCHDOG_PID unset or ours), 0 otherwise.
func watchdogInterval() time.Duration {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// notifyReady tells systemd vpnd is serving and starts the watchdog
// pings, each sent only if alive answers (vpnd's serving state can be
// read: no deadlock on the server's locks). stop ends the pings.
func notifyReady(log *slog.Logger, alive func() bool, stop <-chan struct{}) {
	if sdNotify("READY=1\nSTATUS=serving") {
		log.Debug("sd_notify: READY=1 sent")
	}
	iv := watchdogInterval()
	if iv == 0 {
		return
	}
	log.Info("systemd watchdog enabled", "interval", iv)
	go func() {
		t := time.NewTicker(iv)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if alive() {
					sdNotify("WATCHDOG=1")
				}
			}
		}
	}()
}

//go:build linux

package main

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNotifyReadyAndWatchdog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	stop := make(chan struct{})
	defer close(stop)
	notifyReady(slog.New(slog.DiscardHandler), func() bool { return true }, stop)
	buf := make([]byte, 256)
	sock.SetDeadline(time.Now().Add(5 * time.Second))
	n, err := sock.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=serving" {
		t.Fatalf("first datagram %q, %v", buf[:n], err)
	}
	for range 2 {
		n, err := sock.Read(buf)
		if err != nil || string(buf[:n]) != "WATCHDOG=1" {
			t.Fatalf("watchdog datagram %q, %v", buf[:n], err)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	if iv := watchdogInterval(); iv != 15*time.Second {
		t.Errorf("interval %v, want 15s", iv)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if iv := watchdogInterval(); iv != 0 {
		t.Errorf("watchdog for another pid: interval %v, want 0", iv)
	}
	t.Setenv("WATCHDOG_USEC", "")
	if iv := watchdogInterval(); iv != 0 {
		t.Errorf("no WATCHDOG_USEC: interval %v", iv)
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sdNotify("READY=1") {
		t.Fatal("sdNotify without NOTIFY_SOCKET reported success")
	}
}

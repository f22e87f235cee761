// Package harness is what the end-to-end tests (e2e, and through them the
// kTLS VM tests) and the benchmark (bench/cmd/kvpnbench) share to run kvpn
// and the stock tools in network namespaces: the namespaces themselves
// and the veth pairs between them (NS, Link), commands run to completion
// in them (NS.Run), long-lived processes with their output captured
// (Proc), retrying until something holds (Eventually), ocserv's
// configuration file and the account its workers run as.
//
// Everything here returns errors; what it creates it registers for
// undoing with a Cleaner, which *testing.T and kvpnbench's cleanup stack
// both are. The e2e tests wrap it in helpers that fail the test.
package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Cleaner registers what to undo when a test or a benchmark case ends:
// *testing.T is one (its cleanups run when the test ends, newest first,
// also when it fails), and so is kvpnbench's cleanup stack. Logf reports
// what a cleanup could not undo.
type Cleaner interface {
	Cleanup(func())
	Logf(format string, args ...any)
}

// Output collects a process's stdout and stderr while others read it.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// RandHex is n random bytes in hex: the part of a namespace's, device's
// or file's name that keeps it apart from those of other runs.
func RandHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Tail is the last n lines of s (all of s if n <= 0).
func Tail(s string, n int) string {
	if n <= 0 {
		return s
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Sleep waits d, or returns ctx's error when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Eventually calls f every 100 ms until it returns nil. Once timeout has
// passed it returns f's last error after what; when ctx ends first, ctx's
// error.
func Eventually(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %v", what, err)
		}
		if err := Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

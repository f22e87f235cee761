// Package harness is what the end-to-end tests (e2e, and through them the
// kTLS VM tests) and the benchmark (bench/cmd/kvpnbench) share to run
// stock ocserv and openconnect next to kvpn: ocserv's configuration file,
// the account its workers run as, and a goroutine-safe buffer for the
// output of the processes they start.
package harness

import (
	"bytes"
	"sync"
)

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

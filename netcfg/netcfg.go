// Package netcfg applies the host network changes a VPN needs — interface
// address, MTU, routes, DNS — and records each so it can be undone exactly.
//
// Each method makes only the changes that are needed (an address or route
// that is already there is left alone and not recorded), so Restore returns
// the system to the state before, not to some default. Undo steps treat "it
// is already gone" as done: when the TUN device is closed the kernel removes
// its addresses and routes with it, so the order of Restore and Close does not
// matter.
//
// All netlink calls act on the network namespace of the calling thread.
package netcfg

import (
	"errors"
	"fmt"
	"sync"
)

// Changes records every change in order; Restore undoes them in reverse.
// Safe for concurrent use.
type Changes struct {
	mu    sync.Mutex
	steps []step
	// tunnelLinks are the ifindexes AddRoute sent routes through, so
	// PinHostRoute can refuse to pin a path that already enters the tunnel.
	tunnelLinks map[int]bool
	// journal is the file listing the outer routes that exist now, and
	// journaled its entries (journal.go).
	journal   string
	journaled []journalEntry
}

type step struct {
	desc string
	fn   func() error
}

// New returns an empty record.
func New() *Changes { return &Changes{tunnelLinks: map[int]bool{}} }

// Undo adds an arbitrary undo step (for callers' own changes).
func (c *Changes) Undo(desc string, fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps = append(c.steps, step{desc, fn})
}

// Restore undoes all recorded changes, newest first. It continues past
// failures and returns them joined. The record is emptied, so a second call is
// a no-op.
func (c *Changes) Restore() error {
	c.mu.Lock()
	steps := c.steps
	c.steps = nil
	clear(c.tunnelLinks)
	c.mu.Unlock()

	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("netcfg: undo %s: %w", steps[i].desc, err))
		}
	}
	return errors.Join(errs...)
}

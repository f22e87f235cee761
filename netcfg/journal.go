package netcfg

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol is the rtm_protocol of the routes kvpn adds outside the
// tunnel (server pins, split-exclude routes); `ip route` shows it as
// "proto 107" ('k'), a number no routing daemon in iproute2's rt_protos
// uses. Recovery deletes only routes that carry it, so a route someone else
// added with the same destination is never taken away.
const RouteProtocol = 107

// Routes through the TUN device vanish with it when the process dies; routes
// through the physical link (the pin to the server, split-exclude routes)
// would stay behind after a crash. The journal lists those, durably, while
// they exist: an entry is written before the route is added and removed
// after it is deleted, so a crash at any point leaves at most entries for
// routes that may not exist (deleting them is a no-op), never a route
// without an entry.

// journalEntry is one outer route as recorded in the journal file.
type journalEntry struct {
	Dst   string `json:"dst"`
	Gw    string `json:"gw,omitempty"`
	Link  int    `json:"link"`
	Table int    `json:"table"`
	Scope uint8  `json:"scope"`
	// Type is the route type when it is not unicast (RTN_UNREACHABLE for
	// UnreachableRoute).
	Type int `json:"type,omitempty"`
}

func entryOf(r *netlink.Route) journalEntry {
	e := journalEntry{Dst: r.Dst.String(), Link: r.LinkIndex, Table: r.Table, Scope: uint8(r.Scope)}
	if r.Type != unix.RTN_UNICAST {
		e.Type = r.Type
	}
	if r.Gw != nil {
		e.Gw = r.Gw.String()
	}
	return e
}

func (e journalEntry) route() (*netlink.Route, error) {
	dst, err := netip.ParsePrefix(e.Dst)
	if err != nil {
		return nil, fmt.Errorf("bad destination %q", e.Dst)
	}
	r := &netlink.Route{Dst: ipNet(dst), LinkIndex: e.Link, Table: e.Table, Scope: netlink.Scope(e.Scope), Protocol: RouteProtocol, Type: e.Type}
	if e.Gw != "" {
		gw, err := netip.ParseAddr(e.Gw)
		if err != nil {
			return nil, fmt.Errorf("bad gateway %q", e.Gw)
		}
		r.Gw = net.IP(gw.AsSlice())
	}
	return r, nil
}

// SetJournal makes c record the routes it adds outside the tunnel in the
// file at path (in the client's state directory), for RecoverRoutes after a
// crash. The file is removed when the last of them is undone. Call
// RecoverRoutes on path first: an existing journal is overwritten.
func (c *Changes) SetJournal(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.journal = path
}

func (c *Changes) journalAdd(r *netlink.Route) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.journal == "" {
		return nil
	}
	c.journaled = append(c.journaled, entryOf(r))
	return c.writeJournal()
}

func (c *Changes) journalDel(r *netlink.Route) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.journal == "" {
		return nil
	}
	e := entryOf(r)
	i := slices.Index(c.journaled, e)
	if i < 0 {
		return nil
	}
	c.journaled = slices.Delete(c.journaled, i, i+1)
	return c.writeJournal()
}

// writeJournal writes the current entries, or removes the file when there
// are none. Called with c.mu held.
func (c *Changes) writeJournal() error {
	if len(c.journaled) == 0 {
		if err := os.Remove(c.journal); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	data, err := json.Marshal(c.journaled)
	if err != nil {
		return err
	}
	return writeDurably(c.journal, append(data, '\n'))
}

// RecoverRoutes undoes the outer routes of a run that ended without
// Restore (killed, crashed, power lost): it deletes every route listed in
// the journal at path that still exists with kvpn's RouteProtocol, and then
// removes the journal. It returns how many routes it deleted. No journal:
// nothing to do. A journal it cannot parse is an error and is left in place
// for a human to read.
func RecoverRoutes(path string) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("netcfg: read route journal: %w", err)
	}
	var entries []journalEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		return 0, fmt.Errorf("netcfg: route journal %s: %w", path, err)
	}
	n := 0
	var errs []error
	for _, e := range entries {
		r, err := e.route()
		if err != nil {
			errs = append(errs, fmt.Errorf("netcfg: route journal %s: %w", path, err))
			continue
		}
		switch err := netlink.RouteDel(r); {
		case err == nil:
			n++
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENODEV):
			// Gone already (or never added: the entry is written first).
		default:
			errs = append(errs, fmt.Errorf("netcfg: delete route %s via %s dev #%d: %w", e.Dst, e.Gw, e.Link, err))
		}
	}
	if len(errs) > 0 {
		return n, errors.Join(errs...)
	}
	if err := os.Remove(path); err != nil {
		return n, fmt.Errorf("netcfg: remove route journal: %w", err)
	}
	return n, nil
}

package netcfg

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UnreachableRoute installs `unreachable DST proto 107` in the main table:
// the kernel fails a connection to DST at once (EHOSTUNREACH or
// ENETUNREACH, nothing is sent), so applications fall back to
// the other address family immediately (Happy Eyeballs, RFC 8305) instead
// of leaking out of the physical link. vpnc uses it for ::/1 and 8000::/1
// when a full IPv4 tunnel carries no IPv6: more specific than any IPv6
// default route, less specific than the link-local (fe80::/64) and
// multicast (ff00::/8) routes of each interface and than its connected
// prefixes, and the local table (::1, the host's own addresses) is
// consulted before the main table, so those keep working.
//
// The route does not belong to the TUN device and outlives it, so like the
// server pin it is journaled (SetJournal) before it is added and removed by
// RecoverRoutes after a crash. An existing route to exactly dst (someone
// else's) is an error wrapping EEXIST. Undo: delete it.
func (c *Changes) UnreachableRoute(dst netip.Prefix) error {
	if !dst.IsValid() {
		return fmt.Errorf("netcfg: UnreachableRoute: invalid destination %v", dst)
	}
	dst = dst.Masked()
	r := &netlink.Route{Dst: ipNet(dst), Type: unix.RTN_UNREACHABLE, Table: unix.RT_TABLE_MAIN,
		Protocol: RouteProtocol, Scope: netlink.SCOPE_UNIVERSE}
	desc := fmt.Sprintf("unreachable route %s", dst)
	if err := c.journalAdd(r); err != nil {
		return fmt.Errorf("netcfg: record %s: %w", desc, err)
	}
	if err := netlink.RouteAdd(r); err != nil {
		c.journalDel(r)
		return fmt.Errorf("netcfg: add %s: %w", desc, err)
	}
	c.undoRoute(desc, r)
	return nil
}

// HostAddrs lists the addresses on the host's interfaces (in the calling
// thread's network namespace), except those of the link named except (the
// tunnel's own, on a reconnect); "" excludes none. A link that does not
// exist excludes nothing.
func HostAddrs(except string) ([]netip.Addr, error) {
	skip := -1
	if except != "" {
		if l, err := netlink.LinkByName(except); err == nil {
			skip = l.Attrs().Index
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("netcfg: list addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if a.LinkIndex == skip || a.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

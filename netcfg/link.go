package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetLink sets address (addr with prefix), MTU (if mtu > 0) and brings the
// link up. Undo: set the link down (if it was down), remove the address (if
// it was not there before) and put the old MTU back. The device itself is
// closed by its owner.
func (c *Changes) SetLink(name string, addr netip.Prefix, mtu int) error {
	if !addr.IsValid() {
		return fmt.Errorf("netcfg: SetLink %s: invalid address %v", name, addr)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netcfg: SetLink %s: %w", name, err)
	}
	// Undo by ifindex, not name: a device created later under the same name
	// is a different device and must not be touched.
	idx := link.Attrs().Index

	if old := link.Attrs().MTU; mtu > 0 && old != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("netcfg: set MTU %d on %s: %w", mtu, name, err)
		}
		c.Undo(fmt.Sprintf("MTU %d on %s", mtu, name), func() error {
			return onLink(idx, func(l netlink.Link) error { return netlink.LinkSetMTU(l, old) })
		})
	}

	a := &netlink.Addr{IPNet: ipNet(addr)}
	if addr.Addr().Is6() {
		// Duplicate address detection would hold the address "tentative"
		// (unusable as a source) for about a second; the VPN server
		// assigned it, so it is unique by construction.
		a.Flags = unix.IFA_F_NODAD
	}
	switch err := netlink.AddrAdd(link, a); {
	case errors.Is(err, unix.EEXIST):
		// Already configured: leave it, and leave it on Restore.
	case err != nil:
		return fmt.Errorf("netcfg: add address %s to %s: %w", addr, name, err)
	default:
		c.Undo(fmt.Sprintf("address %s on %s", addr, name), func() error {
			return onLink(idx, func(l netlink.Link) error {
				err := netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(addr)})
				if errors.Is(err, unix.EADDRNOTAVAIL) {
					return nil // already removed
				}
				return err
			})
		})
	}

	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("netcfg: set %s up: %w", name, err)
		}
		c.Undo("link "+name+" up", func() error {
			return onLink(idx, netlink.LinkSetDown)
		})
	}
	return nil
}

// AddRoute routes dst through the named link (scope link, no gateway: a TUN
// is point-to-point, there is no next hop to resolve). dst is masked to its
// network, as the kernel rejects a destination with host bits set. Undo:
// delete that exact route. An already-existing identical route: an error
// wrapping EEXIST (the kernel's answer to NLM_F_EXCL) naming the route.
func (c *Changes) AddRoute(dst netip.Prefix, link string) error {
	if !dst.IsValid() {
		return fmt.Errorf("netcfg: AddRoute: invalid destination %v", dst)
	}
	dst = dst.Masked()
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("netcfg: route %s dev %s: %w", dst, link, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Scope: netlink.SCOPE_LINK}
	desc := fmt.Sprintf("route %s dev %s", dst, link)
	if err := netlink.RouteAdd(r); err != nil {
		return fmt.Errorf("netcfg: add %s: %w", desc, err)
	}
	c.mu.Lock()
	c.tunnelLinks[r.LinkIndex] = true
	c.mu.Unlock()
	c.Undo(desc, func() error { return delRoute(r) })
	return nil
}

// PinHostRoute keeps the path to the VPN server outside the tunnel: it looks
// up the kernel's current route to server (RTM_GETROUTE, as `ip route get`)
// and installs a /32 (or /128) host route in the main table with that
// route's gateway and output link, unless an identical host route exists.
// The longest prefix wins, so tunnel routes added later (even 0.0.0.0/1 and
// 128.0.0.0/1) do not capture the server. Call it before AddRoute; it fails
// if the server is already routed into a link AddRoute used. A server on a
// local address needs no pin (the local table is consulted first) and gets
// none. Undo: delete it.
func (c *Changes) PinHostRoute(server netip.Addr) error {
	server = server.Unmap()
	if !server.IsValid() {
		return errors.New("netcfg: PinHostRoute: invalid server address")
	}
	return c.outerRoute(netip.PrefixFrom(server, server.BitLen()), "server", "host route")
}

// ExcludeRoute keeps dst (a split-exclude network) outside the tunnel: it
// routes dst the way the kernel routes dst's first address now, before
// tunnel routes exist (the gateway and link of `ip route get`, as
// openconnect's vpnc-script does), so it stays more specific than the
// tunnel routes that cover it. A route to exactly dst that exists already
// is left alone (it keeps the traffic where it was). dst without a route
// at all is an error wrapping ENETUNREACH (nothing to keep it on; the caller
// decides). Call it before AddRoute. Undo: delete the route.
func (c *Changes) ExcludeRoute(dst netip.Prefix) error {
	if !dst.IsValid() {
		return fmt.Errorf("netcfg: ExcludeRoute: invalid destination %v", dst)
	}
	return c.outerRoute(dst.Masked(), "excluded network", "exclude route")
}

// outerRoute installs dst via the path the kernel uses for dst's address
// now; see PinHostRoute and ExcludeRoute. The route carries the protocol
// RouteProtocol and is recorded in the journal (SetJournal) before it is
// added, so RecoverRoutes can remove it after a crash.
func (c *Changes) outerRoute(dst netip.Prefix, what, kind string) error {
	routes, err := netlink.RouteGet(dst.Addr().AsSlice())
	if err == nil && len(routes) == 0 {
		err = errors.New("empty answer")
	}
	if err != nil {
		return fmt.Errorf("netcfg: route lookup for %s %s: %w", what, dst.Addr(), err)
	}
	cur := routes[0]
	if cur.Type == unix.RTN_LOCAL {
		return nil
	}
	c.mu.Lock()
	inTunnel := c.tunnelLinks[cur.LinkIndex]
	c.mu.Unlock()
	if inTunnel {
		return fmt.Errorf("netcfg: %s %s is already routed into the tunnel; add its route before the tunnel routes", what, dst.Addr())
	}

	r := &netlink.Route{Dst: ipNet(dst), Gw: cur.Gw, LinkIndex: cur.LinkIndex, Scope: netlink.SCOPE_UNIVERSE,
		Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol}
	if cur.Gw == nil {
		r.Scope = netlink.SCOPE_LINK // directly connected
	}
	existing, err := netlink.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Dst: r.Dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("netcfg: list routes to %s: %w", dst, err)
	}
	for _, e := range existing {
		if e.LinkIndex == r.LinkIndex && e.Gw.Equal(r.Gw) {
			return nil // identical route exists (not ours to remove)
		}
	}
	desc := fmt.Sprintf("%s %s via %v dev #%d", kind, dst, cur.Gw, cur.LinkIndex)
	if err := c.journalAdd(r); err != nil {
		return fmt.Errorf("netcfg: record %s: %w", desc, err)
	}
	if err := netlink.RouteAdd(r); err != nil {
		c.journalDel(r)
		if errors.Is(err, unix.EEXIST) {
			// Another route to exactly dst (other gateway or link) is
			// already there: the kernel uses it, not the tunnel's shorter
			// prefixes, so dst stays outside the tunnel without us.
			return nil
		}
		return fmt.Errorf("netcfg: add %s: %w", desc, err)
	}
	c.undoRoute(desc, r)
	return nil
}

// undoRoute registers the removal of route r, which is in the journal, as
// the undo of desc.
func (c *Changes) undoRoute(desc string, r *netlink.Route) {
	c.Undo(desc, func() error {
		if err := delRoute(r); err != nil {
			return err
		}
		return c.journalDel(r)
	})
}

// delRoute deletes r; a route that is already gone (ESRCH), for instance
// because the kernel flushed it with its device, counts as deleted.
func delRoute(r *netlink.Route) error {
	err := netlink.RouteDel(r)
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// onLink runs fn on the link with ifindex idx; a link that no longer exists
// counts as done (its addresses, routes and state went with it).
func onLink(idx int, fn func(netlink.Link) error) error {
	l, err := netlink.LinkByIndex(idx)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	if err != nil {
		return err
	}
	return fn(l)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

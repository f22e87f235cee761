package client

import (
	"net/netip"
	"os"

	"kvpn/cstp"
	"kvpn/netcfg"
)

// fullTunnel6 is IPv6's full tunnel, in two halves for the same reason as
// fullTunnel: the existing default route stays untouched and wins again
// once ours are gone.
var fullTunnel6 = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}

// minIPv6MTU is IPv6's minimum link MTU (RFC 8200): the kernel turns IPv6
// off on a link with a smaller one.
const minIPv6MTU = 1280

// ipv6Routes picks the IPv6 routes of a CONNECT answer: the IPv6 split
// includes, or a full IPv6 tunnel when there are none. The families are
// decided separately, as openconnect's vpnc-script does: IPv4 split routes
// alone leave IPv6 a full tunnel. No IPv6 address, no IPv6 routes.
func ipv6Routes(addr6 netip.Prefix, include []netip.Prefix) []netip.Prefix {
	if !addr6.IsValid() {
		return nil
	}
	var out []netip.Prefix
	for _, r := range include {
		if r.Addr().Is6() && !r.Addr().Is4In6() {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return fullTunnel6
	}
	return out
}

// ipv4Routes is the IPv4 part of the routes into the tunnel: the IPv4
// split includes, or the full tunnel's two halves when there are none.
func ipv4Routes(include []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range include {
		if r.Addr().Is4() {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return fullTunnel
	}
	return out
}

// upIPv6 gives the TUN device its IPv6 address (without duplicate address
// detection, so it is usable at once) and picks the IPv6 routes, which
// applyRoutes then adds with the IPv4 ones (after pinning the server's
// host route). Each change is recorded in t.changes and undone on exit.
// Without an IPv6 address it does nothing: up has disabled IPv6 on the
// device then.
func (t *tunnel) upIPv6(name string) error {
	p := t.params
	if !p.AddressIP6.IsValid() {
		return nil
	}
	if p.MTU < minIPv6MTU {
		t.log.Warn("ignoring the IPv6 address: the tunnel MTU is below IPv6's minimum", "mtu", p.MTU, "address", p.AddressIP6.String())
		np := *p
		np.AddressIP6 = netip.Prefix{}
		t.params = &np
		os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
		return nil
	}
	if err := t.changes.SetLink(name, p.AddressIP6, p.MTU); err != nil {
		return err
	}
	t.routes6 = ipv6Routes(p.AddressIP6, p.SplitInclude)
	return nil
}

// ipv6Desc describes the IPv6 address for the "tunnel up" line.
func (t *tunnel) ipv6Desc() string {
	if len(t.routes6) == 0 {
		return ""
	}
	return ", IPv6 " + t.params.AddressIP6.String()
}

// readdress6 follows a change of the IPv6 address on reconnect (a session
// resumed on another node gets an address from that node's pool): the
// interface moves to the new address, as readdress does for IPv4. The
// routes stay. A tunnel that started without IPv6 stays without it.
func (t *tunnel) readdress6(p *cstp.TunnelParams) error {
	old, now := t.params.AddressIP6, p.AddressIP6
	if len(t.routes6) == 0 {
		if now.IsValid() {
			t.log.Warn("server assigned an IPv6 address on reconnect; the tunnel started without IPv6 and stays so", "address", now.String())
		}
		return nil
	}
	if old == now {
		return nil
	}
	name := t.dev.Name()
	if now.IsValid() {
		if err := t.changes.SetLink(name, now, 0); err != nil {
			return err
		}
	}
	// old is invalid when the last reconnect brought no IPv6 address.
	if err := netcfg.RemoveAddr(name, old); err != nil {
		return err
	}
	if now.IsValid() {
		t.log.Warn("server assigned a different IPv6 address on reconnect; interface moved to it", "old", old.String(), "new", now.String())
	} else {
		t.log.Warn("server assigned no IPv6 address on reconnect; IPv6 into the tunnel stops", "old", old.String())
	}
	return nil
}

package client

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"kvpn/cstp"
	"kvpn/netcfg"
)

// What a server pushes is checked before vpnc applies any of it: the
// server may be hostile or compromised, and its values end up in the
// kernel's address and routing tables, in resolv.conf and on resolvectl's
// command line. Tunnel addresses that cannot be right are refused (the
// tunnel does not come up); a DNS server, search domain or route that
// cannot be right is dropped with a warning and the rest is applied, as
// openconnect's vpnc-script ignores what it cannot use.

// errUnusableParams marks a CONNECT answer whose tunnel addresses vpnc
// refuses: a protocol error (exit code 4, as for an answer that does not
// parse), and on a reconnect an end to retrying.
var errUnusableParams = errors.New("unusable tunnel parameters")

// Ranges no pushed address or route may fall in: "this network"
// (RFC 1122 3.2.1.3), loopback, link-local (RFC 3927, RFC 4291 2.5.6),
// multicast and the reserved 240.0.0.0/4 with the limited broadcast
// address (RFC 1112 4, RFC 919).
var badRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"), // IPv4-mapped (RFC 4291 2.5.5.2)
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// inBadRange reports whether all of p lies in one of badRanges (0.0.0.0/0
// and ::/0 contain them but are not inside one).
func inBadRange(p netip.Prefix) bool {
	for _, r := range badRanges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// usableAddr reports why a is no host address vpnc can use ("" if it can).
func usableAddr(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.Zone() != "":
		return "has a zone"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsMulticast():
		return "multicast"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.Is4() && a.As4() == [4]byte{255, 255, 255, 255}:
		return "broadcast"
	case inBadRange(netip.PrefixFrom(a, a.BitLen())):
		return "reserved"
	}
	return ""
}

// maskPrefixLen is the prefix length of an IPv4 netmask, or -1 if m is not
// one (not IPv4, or its one bits are not contiguous). No netmask (the
// header is optional) is a /32.
func maskPrefixLen(m netip.Addr) int {
	if !m.IsValid() {
		return 32
	}
	if !m.Is4() {
		return -1
	}
	n := maskBits(m)
	if netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), n).Masked().Addr() != m {
		return -1
	}
	return n
}

// checkTunnelAddr refuses a tunnel address (IPv4 with its netmask, or IPv6
// with its prefix) that cannot be the client's own on a VPN link: a
// netmask of 0.0.0.0 or a /0 (the connected route would swallow
// everything), an address of a special range, the broadcast address of
// its own subnet, an address already on one of the host's interfaces (the
// client's LAN address; the kernel would add a second local route to it),
// or the server's address.
func checkTunnelAddr(pfx netip.Prefix, host []netip.Addr, server netip.Addr) error {
	a := pfx.Addr()
	if why := usableAddr(a); why != "" {
		return fmt.Errorf("the tunnel address %s is %s", a, why)
	}
	if pfx.Bits() == 0 {
		return fmt.Errorf("the tunnel address %s comes with a zero netmask (it would route everything to the link)", a)
	}
	if a.Is4() && pfx.Bits() <= 30 {
		b := a.As4()
		last := pfx.Masked().Addr().As4()
		for i := range last {
			last[i] |= byte(0xff >> min(8, max(0, pfx.Bits()-8*i)))
		}
		if b == last {
			return fmt.Errorf("the tunnel address %s is the broadcast address of %s", a, pfx.Masked())
		}
	}
	if slices.Contains(host, a) {
		return fmt.Errorf("the tunnel address %s is already an address of this host", a)
	}
	if a == server {
		return fmt.Errorf("the tunnel address %s is the server's own address", a)
	}
	return nil
}

// checkParams validates a CONNECT answer (see above). host lists the
// host's own addresses (without the tunnel device's), server the address
// the TLS connection reached. It returns a copy of p with the unusable DNS
// servers, search domains and routes left out, the warnings for what was
// left out, and an error wrapping errUnusableParams for unusable tunnel
// addresses. p itself is not changed.
func checkParams(p *cstp.TunnelParams, host []netip.Addr, server netip.Addr) (*cstp.TunnelParams, []string, error) {
	refuse := func(err error) (*cstp.TunnelParams, []string, error) {
		return nil, nil, fmt.Errorf("%w: %w", errUnusableParams, err)
	}
	if !p.Address.IsValid() {
		return refuse(errors.New("the server assigned no IPv4 address"))
	}
	bits := maskPrefixLen(p.Netmask)
	if bits < 0 {
		return refuse(fmt.Errorf("the netmask %s is not a netmask", p.Netmask))
	}
	if err := checkTunnelAddr(netip.PrefixFrom(p.Address, bits), host, server); err != nil {
		return refuse(err)
	}
	if p.AddressIP6.IsValid() {
		if !p.AddressIP6.Addr().Is6() {
			return refuse(fmt.Errorf("the IPv6 address %s is not IPv6", p.AddressIP6))
		}
		if err := checkTunnelAddr(p.AddressIP6, host, server); err != nil {
			return refuse(err)
		}
	}
	np := *p
	var warns []string
	np.DNS = nil
	for _, s := range p.DNS {
		if why := usableAddr(s); why != "" {
			warns = append(warns, fmt.Sprintf("ignoring pushed DNS server %s: %s", s, why))
			continue
		}
		np.DNS = append(np.DNS, s)
	}
	var domains []string
	for _, d := range netcfg.SplitDomains(p.DefaultDomain) {
		if !netcfg.ValidDomainName(d) {
			warns = append(warns, fmt.Sprintf("ignoring pushed search domain %q: not a valid DNS name", d))
			continue
		}
		domains = append(domains, d)
	}
	np.DefaultDomain = strings.Join(domains, " ")
	np.SplitInclude, warns = checkRoutes(p.SplitInclude, "split-include", warns)
	np.SplitExclude, warns = checkRoutes(p.SplitExclude, "split-exclude", warns)
	return &np, warns, nil
}

// usableRoute reports why a pushed route cannot be used ("" if it can):
// one inside a special range would move loopback, link-local or multicast
// traffic into (or, excluded, out of) the tunnel.
func usableRoute(r netip.Prefix) string {
	switch {
	case !r.IsValid():
		return "invalid"
	case r.Addr().Zone() != "":
		return "has a zone"
	case r != r.Masked():
		return "has host bits set"
	case inBadRange(r):
		return "is in a special-purpose range"
	}
	return ""
}

func checkRoutes(rs []netip.Prefix, what string, warns []string) ([]netip.Prefix, []string) {
	var out []netip.Prefix
	for _, r := range rs {
		if why := usableRoute(r); why != "" {
			warns = append(warns, fmt.Sprintf("ignoring pushed %s route %s: %s", what, r, why))
			continue
		}
		out = append(out, r)
	}
	return out, warns
}

// RoutePolicy is what the user lets the server route (vpnc's --no-routes,
// --route-filter and --allow-ipv6-leak).
type RoutePolicy struct {
	// NoRoutes installs none of the pushed routes (nor the full tunnel):
	// the tunnel carries only its own subnet, and what the user routes
	// into it (openconnect users do this with vpn-slice).
	NoRoutes bool
	// Filter, if not empty, installs only the pushed routes (and
	// split-exclude routes) that lie inside one of these prefixes. A full
	// tunnel is its two halves, 0.0.0.0/1 and 128.0.0.0/1 (::/1 and
	// 8000::/1): a filter of 0.0.0.0/0 lets it in, a narrower one does not.
	Filter []netip.Prefix
	// AllowIPv6Leak leaves IPv6 alone in an IPv4-only full tunnel;
	// otherwise it is black-holed (routePlan).
	AllowIPv6Leak bool
}

func (rp RoutePolicy) allows(r netip.Prefix) bool {
	if rp.NoRoutes {
		return false
	}
	if len(rp.Filter) == 0 {
		return true
	}
	for _, f := range rp.Filter {
		if f.Addr().Is4() == r.Addr().Is4() && f.Bits() <= r.Bits() && f.Contains(r.Addr()) {
			return true
		}
	}
	return false
}

// ParseRouteFilter parses --route-filter: CIDR prefixes separated by
// commas, without host bits ("default" is 0.0.0.0/0 and ::/0).
func ParseRouteFilter(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "default" {
			out = append(out, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("route filter %q: want ADDR/LEN", f)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("route filter %q has host bits set (did you mean %s?)", f, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// blackhole6 is where IPv6 goes in an IPv4-only full tunnel: two
// unreachable halves, more specific than any IPv6 default route.
var blackhole6 = fullTunnel6

// routePlan is the routes vpnc installs for a (checked) CONNECT answer.
type routePlan struct {
	// tunnel is the routes into the tunnel, both families (IPv6 only
	// with an IPv6 address).
	tunnel []netip.Prefix
	// excludes is the split-exclude routes kept outside the tunnel.
	excludes []netip.Prefix
	// unreachable is the IPv6 black hole of an IPv4-only full tunnel.
	unreachable []netip.Prefix
	// refused is the pushed routes the policy kept out.
	refused []netip.Prefix
}

// planRoutes decides the routes for p (checkParams' output) under rp:
// the IPv4 split includes or the full tunnel, the IPv6 ones with an IPv6
// address (ipv6Routes), each only if rp allows it. In a full IPv4 tunnel
// without IPv6 (no address pushed, or refused for the MTU) the kernel
// would send IPv6 out of the physical link, around the tunnel the user
// asked to carry everything: unless AllowIPv6Leak, IPv6 is black-holed
// for the tunnel's lifetime, and IPv6 split excludes then keep their path
// outside it.
func planRoutes(p *cstp.TunnelParams, rp RoutePolicy) routePlan {
	var plan routePlan
	pushed := append(slices.Clone(ipv4Routes(p.SplitInclude)), ipv6Routes(p.AddressIP6, p.SplitInclude)...)
	for _, r := range pushed {
		if !rp.allows(r) {
			plan.refused = append(plan.refused, r)
			continue
		}
		plan.tunnel = append(plan.tunnel, r)
	}
	if plan.full4() && !p.AddressIP6.IsValid() && !rp.AllowIPv6Leak {
		plan.unreachable = blackhole6
	}
	for _, x := range p.SplitExclude {
		fam := x.Addr().Is4() || p.AddressIP6.IsValid() || plan.unreachable != nil
		if fam && rp.allows(x) {
			plan.excludes = append(plan.excludes, x)
		}
	}
	return plan
}

// full4 reports whether the plan sends all of IPv4 into the tunnel (a
// pushed default route, or the full tunnel's two halves).
func (plan routePlan) full4() bool {
	return slices.Contains(plan.tunnel, netip.MustParsePrefix("0.0.0.0/0")) ||
		slices.Contains(plan.tunnel, fullTunnel[0]) && slices.Contains(plan.tunnel, fullTunnel[1])
}

// describe is the routes part of the "tunnel up" line: the routes into the
// tunnel (a full tunnel of a family as its /0), the excluded ones, and
// the IPv6 black hole.
func (plan routePlan) describe() string {
	var v4, v6 []string
	full := func(halves []netip.Prefix) bool {
		return slices.Contains(plan.tunnel, halves[0]) && slices.Contains(plan.tunnel, halves[1])
	}
	full4, full6 := full(fullTunnel), full(fullTunnel6)
	for _, r := range plan.tunnel {
		switch {
		case r.Addr().Is4() && !(full4 && slices.Contains(fullTunnel, r)):
			v4 = append(v4, r.String())
		case r.Addr().Is6() && !(full6 && slices.Contains(fullTunnel6, r)):
			v6 = append(v6, r.String())
		}
	}
	if full4 {
		v4 = append([]string{"0.0.0.0/0 (full tunnel)"}, v4...)
	}
	if full6 {
		v6 = append([]string{"::/0 (full tunnel)"}, v6...)
	}
	desc := strings.Join(v4, ",")
	if len(v4) == 0 {
		desc = "none"
	}
	if len(v6) > 0 {
		desc += " + " + strings.Join(v6, ",")
	}
	if len(plan.excludes) > 0 {
		desc += " except " + prefixList(plan.excludes)
	}
	if len(plan.unreachable) > 0 {
		desc += ", IPv6 blocked"
	}
	return desc
}

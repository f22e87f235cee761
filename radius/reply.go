package radius

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	layeh "layeh.com/radius"
)

// Settings are what an Access-Accept asks for the session.
type Settings struct {
	// FramedIP is the session's fixed tunnel address (Framed-IP-Address);
	// invalid when the reply has none or asks the NAS to choose
	// (255.255.255.254, 255.255.255.255).
	FramedIP netip.Addr
	// Routes are the networks behind the client (Framed-Route,
	// Framed-IPv6-Prefix, Framed-IPv6-Route), its iroutes.
	Routes []netip.Prefix
	// Class holds the Class attributes, echoed in accounting.
	Class [][]byte
	// Groups are the groups named in Class ("OU=name;..."), in order.
	Groups []string
	// SessionTimeout and IdleTimeout: 0 when absent.
	SessionTimeout, IdleTimeout time.Duration
	// Interim is Acct-Interim-Interval (0 when absent; at least
	// MinAttrInterim otherwise).
	Interim time.Duration
	// Ignored describes the attributes vpnd does not apply.
	Ignored []string
}

// Group is the first group of Groups, "" if none.
func (s *Settings) Group() string {
	if len(s.Groups) == 0 {
		return ""
	}
	return s.Groups[0]
}

// AttrError is an Access-Accept attribute that cannot be applied: the
// login is refused rather than half-applied.
type AttrError struct {
	Attr string
	Err  error
}

func (e *AttrError) Error() string { return fmt.Sprintf("RADIUS attribute %s: %v", e.Attr, e.Err) }
func (e *AttrError) Unwrap() error { return e.Err }

// Attribute types vpnd reads or knows to pass over.
const (
	attrUserName        = 1
	attrFramedIP        = 8
	attrFramedNetmask   = 9
	attrReplyMessage    = 18
	attrFramedRoute     = 22
	attrState           = 24
	attrClass           = 25
	attrSessionTimeout  = 27
	attrIdleTimeout     = 28
	attrProxyState      = 33
	attrInterimInterval = 85
	attrFramedIPv6Pfx   = 97
	attrFramedIPv6Route = 99
)

// Limits on what one reply may ask for.
const (
	MaxRoutes  = 64
	MaxClasses = 16
	MaxGroups  = 16
)

// ParseAccept turns an Access-Accept's attributes into session settings.
// A malformed attribute that would change the session (an address, a
// route, a timeout of the wrong size) is an *AttrError; attributes vpnd
// does not apply are listed in Ignored.
func ParseAccept(attrs layeh.Attributes, groupFromClass bool) (*Settings, error) {
	s := &Settings{}
	bad := func(name string, format string, a ...any) error {
		return &AttrError{Attr: name, Err: fmt.Errorf(format, a...)}
	}
	seen := map[byte]bool{}
	for _, avp := range attrs {
		v := []byte(avp.Attribute)
		t := byte(avp.Type)
		switch t {
		case attrFramedIP:
			if seen[t] {
				return nil, bad("Framed-IP-Address", "more than one")
			}
			if len(v) != 4 {
				return nil, bad("Framed-IP-Address", "%d bytes, want 4", len(v))
			}
			a := netip.AddrFrom4([4]byte(v))
			if a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) && a != netip.AddrFrom4([4]byte{255, 255, 255, 254}) {
				s.FramedIP = a
			}
		case attrFramedRoute, attrFramedIPv6Route:
			name := "Framed-Route"
			if t == attrFramedIPv6Route {
				name = "Framed-IPv6-Route"
			}
			p, err := parseFramedRoute(string(v), t == attrFramedIPv6Route)
			if err != nil {
				return nil, bad(name, "%q: %v", printable(v), err)
			}
			s.Routes = append(s.Routes, p)
		case attrFramedIPv6Pfx:
			p, err := parseIPv6Prefix(v)
			if err != nil {
				return nil, bad("Framed-IPv6-Prefix", "%v", err)
			}
			s.Routes = append(s.Routes, p)
		case attrClass:
			if len(v) == 0 {
				return nil, bad("Class", "empty")
			}
			if len(s.Class) == MaxClasses {
				return nil, bad("Class", "more than %d", MaxClasses)
			}
			s.Class = append(s.Class, append([]byte(nil), v...))
			if groupFromClass {
				s.Groups = appendGroups(s.Groups, string(v))
				if len(s.Groups) > MaxGroups {
					return nil, bad("Class", "names more than %d groups", MaxGroups)
				}
			}
		case attrSessionTimeout, attrIdleTimeout, attrInterimInterval:
			name := map[byte]string{attrSessionTimeout: "Session-Timeout", attrIdleTimeout: "Idle-Timeout", attrInterimInterval: "Acct-Interim-Interval"}[t]
			if seen[t] {
				return nil, bad(name, "more than one")
			}
			if len(v) != 4 {
				return nil, bad(name, "%d bytes, want 4", len(v))
			}
			d := time.Duration(binary.BigEndian.Uint32(v)) * time.Second
			switch t {
			case attrSessionTimeout:
				s.SessionTimeout = d
			case attrIdleTimeout:
				s.IdleTimeout = d
			default:
				if d > 0 {
					s.Interim = max(d, MinAttrInterim)
				}
			}
		case attrReplyMessage, attrState, attrProxyState, msgAuthType, attrUserName:
			// Handled elsewhere, or nothing to apply.
		default:
			s.Ignored = append(s.Ignored, attrName(t))
		}
		seen[t] = true
	}
	if len(s.Routes) > MaxRoutes {
		return nil, bad("Framed-Route", "%d routes, at most %d", len(s.Routes), MaxRoutes)
	}
	return s, nil
}

// parseFramedRoute reads the network of a Framed-Route ("10.1.0.0/16
// 0.0.0.0 1", RFC 2865 5.22) or Framed-IPv6-Route ("2001:db8::/48 ::
// 1"): the first field is the network, a bare address is a host route;
// a dotted netmask may follow an IPv4 network in place of a length.
// Gateway and metric are ignored: the route goes to the session.
func parseFramedRoute(s string, v6 bool) (netip.Prefix, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return netip.Prefix{}, fmt.Errorf("empty")
	}
	var p netip.Prefix
	var err error
	if strings.Contains(f[0], "/") {
		p, err = netip.ParsePrefix(f[0])
		if err != nil {
			return p, err
		}
	} else {
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			return p, err
		}
		bits := a.BitLen()
		if a.Is4() && len(f) > 1 {
			if m, err := netip.ParseAddr(f[1]); err == nil && m.Is4() {
				if bits, err = maskBits(m); err != nil {
					return p, err
				}
			}
		}
		p = netip.PrefixFrom(a, bits)
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return p, fmt.Errorf("not a plain network")
	}
	if v6 != p.Addr().Is6() {
		return p, fmt.Errorf("wrong address family")
	}
	if p.Masked() != p {
		return p, fmt.Errorf("host bits set (did you mean %s?)", p.Masked())
	}
	if p.Bits() == 0 {
		return p, fmt.Errorf("would route everything to one client")
	}
	return p, nil
}

// maskBits is the length of a contiguous IPv4 netmask.
func maskBits(m netip.Addr) (int, error) {
	b := m.As4()
	v := binary.BigEndian.Uint32(b[:])
	n := 0
	for v&0x80000000 != 0 {
		n++
		v <<= 1
	}
	if v != 0 {
		return 0, fmt.Errorf("netmask %s is not contiguous", m)
	}
	return n, nil
}

// parseIPv6Prefix reads a Framed-IPv6-Prefix (RFC 3162 2.3): a reserved
// byte, the prefix length, and as many bytes of the prefix as it needs.
func parseIPv6Prefix(v []byte) (netip.Prefix, error) {
	if len(v) < 2 || len(v) > 18 {
		return netip.Prefix{}, fmt.Errorf("%d bytes, want 2..18", len(v))
	}
	bits := int(v[1])
	if bits == 0 || bits > 128 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d out of range 1..128", bits)
	}
	if len(v)-2 < (bits+7)/8 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d needs %d bytes, have %d", bits, (bits+7)/8, len(v)-2)
	}
	var a [16]byte
	copy(a[:], v[2:])
	p := netip.PrefixFrom(netip.AddrFrom16(a), bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set", p)
	}
	return p, nil
}

// appendGroups adds the groups of a Class value "OU=a;OU=b;" (ocserv's
// form; "OU=" is case-insensitive, other parts are skipped).
func appendGroups(groups []string, class string) []string {
	for _, part := range strings.Split(class, ";") {
		part = strings.TrimSpace(part)
		if len(part) > 3 && strings.EqualFold(part[:3], "OU=") {
			g := strings.TrimSpace(part[3:])
			if g != "" && validGroup(g) {
				groups = append(groups, g)
			}
		}
	}
	return groups
}

// validGroup keeps group names printable and of a sane length.
func validGroup(g string) bool {
	if len(g) > 64 {
		return false
	}
	for _, r := range g {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

// printable is v for a log line.
func printable(v []byte) string {
	if len(v) > 64 {
		v = v[:64]
	}
	return strings.ToValidUTF8(string(v), "?")
}

// attrName names an attribute type for the Ignored list.
func attrName(t byte) string {
	switch t {
	case attrFramedNetmask:
		return "Framed-IP-Netmask"
	case 6:
		return "Service-Type"
	case 7:
		return "Framed-Protocol"
	case 11:
		return "Filter-Id"
	case 12:
		return "Framed-MTU"
	case 26:
		return "Vendor-Specific"
	}
	return fmt.Sprintf("attribute-%d", t)
}

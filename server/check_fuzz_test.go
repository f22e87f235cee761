package server

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"kvpn/ippkt"
)

// The anti-spoofing check against a reference written from its
// documentation (docs/site-to-site.md, restrict-user-to-routes in
// docs/configuration.md), over random policies and packets.

var (
	fuzzAddr4 = netip.MustParseAddr("10.77.0.10")
	fuzzAddr6 = netip.MustParseAddr("fd00:77::10")
	fuzzGW4   = netip.MustParseAddr("10.77.0.1")
	fuzzGW6   = netip.MustParseAddr("fd00:77::1")
)

// fuzzPrefix makes a prefix from three bytes, from a small space so that
// prefixes overlap and packets hit them: IPv4 inside 192.168.0.0/22 (16 to
// 32 bits), IPv6 inside 2001:db8::/62 (48 to 128 bits).
func fuzzPrefix(b0, b1, b2 byte) netip.Prefix {
	if b0&1 == 0 {
		a := netip.AddrFrom4([4]byte{192, 168, b1 & 3, b1 & 0xfc})
		return netip.PrefixFrom(a, 16+int(b2)%17).Masked()
	}
	var a [16]byte
	copy(a[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, b1 & 3})
	a[15] = b1
	return netip.PrefixFrom(netip.AddrFrom16(a), 48+int(b2)%81).Masked()
}

// fuzzPickAddr picks an address of family v6 that a packet may carry: the
// session's own, vpnd's, another client's, one in or near the prefixes of
// fuzzPrefix, a DNS server, the session's IPv4 address mapped into IPv6,
// link-local, or far away.
func fuzzPickAddr(sel, b byte, v6 bool, dns []netip.Addr) netip.Addr {
	switch sel % 8 {
	case 0:
		if v6 {
			return fuzzAddr6
		}
		return fuzzAddr4
	case 1:
		if v6 {
			return fuzzGW6
		}
		return fuzzGW4
	case 2:
		if v6 {
			return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x77, 15: b})
		}
		return netip.AddrFrom4([4]byte{10, 77, 0, b})
	case 5:
		for i := range dns {
			if d := dns[(int(b)+i)%len(dns)]; d.Is6() == v6 {
				return d
			}
		}
	case 6:
		if v6 {
			return netip.AddrFrom16(fuzzAddr4.As16()) // ::ffff:10.77.0.10
		}
	case 7:
		if v6 {
			return netip.AddrFrom16([16]byte{0xfe, 0x80, 15: b})
		}
		return netip.AddrFrom4([4]byte{8, 8, b, b})
	}
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: b & 3, 15: b})
	}
	return netip.AddrFrom4([4]byte{192, 168, b & 3, b})
}

// fuzzPacket is a minimal IPv4 or IPv6 packet (UDP, empty) from src to dst.
func fuzzPacket(src, dst netip.Addr) []byte {
	if src.Is4() {
		p := make([]byte, 28)
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[9] = 17
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		return p
	}
	p := make([]byte, 48)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], 8)
	p[6] = 17
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return p
}

func fuzzContains(nets []netip.Prefix, a netip.Addr) bool {
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// FuzzSessionCheck: for any policy vpnd's configuration accepts (global
// routes, DNS servers, restrict-user-to-routes, an IPv6 pool or none, the
// session's user with or without a table of iroutes and routes), and any
// packet, Session.check accepts the packet exactly when the reference
// does: its source is the session's IPv4 or IPv6 address or lies in one
// of the user's iroutes, and, under restrict-user-to-routes with routes
// pushed, its destination lies in the user's routes (its own list, else
// the global one without the routes inside its iroutes), is vpnd's tunnel
// address or a DNS server. A drop is counted once, under one reason; bytes
// that are not an IP packet are an error, whatever the policy.
func FuzzSessionCheck(f *testing.F) {
	// Routes 192.168.0.0/24 and 2001:db8::/64, one iroute, DNS; packets
	// from the session and from the iroute to the routes and beyond.
	f.Add([]byte{2, 1, 0, 1, 0, 0, 8, 1, 0, 16, 0, 1, 24, 0, 0, 0, 1}, []byte{0, 0, 0, 3, 2, 3, 0, 7, 1, 0, 0, 3, 6, 0, 0, 0}, true, true, true)
	f.Add([]byte{1, 2, 1, 0, 0, 4, 8, 0, 2, 8, 0, 3, 15, 0, 1, 8}, []byte{0, 0, 0, 4, 0, 4, 0, 4, 4, 0, 0, 0}, true, false, true)
	f.Add([]byte{3, 0, 0, 2, 0, 0, 8, 0, 1, 8, 1, 3, 64, 5, 0, 9, 1}, []byte{1, 0, 1, 2, 1, 6, 1, 1, 1, 7, 1, 2, 0, 5, 0, 9}, false, true, false)
	f.Add([]byte{0}, []byte{0x45, 0, 0, 10}, true, true, true)
	f.Fuzz(func(t *testing.T, spec, pkts []byte, restrict, v6, tabled bool) {
		next := func() byte {
			if len(spec) == 0 {
				return 0
			}
			b := spec[0]
			spec = spec[1:]
			return b
		}
		nRoutes, nIRoutes, nUserRoutes, nDNS := int(next()%4), int(next()%3), int(next()%3), int(next()%3)
		var routes, iroutes, userRoutes []netip.Prefix
		var dns []netip.Addr
		for range nRoutes {
			routes = append(routes, fuzzPrefix(next(), next(), next()))
		}
		for range nIRoutes {
			iroutes = append(iroutes, fuzzPrefix(next(), next(), next()))
		}
		for range nUserRoutes {
			userRoutes = append(userRoutes, fuzzPrefix(next(), next(), next()))
		}
		for range nDNS {
			dns = append(dns, fuzzPickAddr(3, next(), next()&1 == 1, nil))
		}
		strs := func(ps []netip.Prefix) []string {
			var s []string
			for _, p := range ps {
				s = append(s, p.String())
			}
			return s
		}
		cfg := DefaultConfig("/nonexistent")
		cfg.IPv4Network = "10.77.0.0/24"
		if v6 {
			cfg.IPv6Network = "fd00:77::/64"
		}
		cfg.Route = strs(routes)
		for _, d := range dns {
			cfg.DNS = append(cfg.DNS, d.String())
		}
		cfg.RestrictUserToRoutes = restrict
		const user = "gw"
		if tabled {
			cfg.Users = map[string]*UserConfig{user: {IRoute: strs(iroutes), Route: strs(userRoutes)}}
		} else {
			iroutes, userRoutes = nil, nil
		}
		if err := cfg.Validate(); err != nil {
			return // a policy vpnd refuses to start with
		}
		// The reference's routes for the user.
		mine := routes
		if tabled {
			mine = userRoutes
			if len(userRoutes) == 0 {
				mine = nil
				for _, p := range routes {
					inside := false
					for _, q := range iroutes {
						inside = inside || q.Bits() <= p.Bits() && q.Contains(p.Addr())
					}
					if !inside {
						mine = append(mine, p)
					}
				}
			}
		}
		allowed := func(dst netip.Addr) bool {
			if !restrict || len(mine) == 0 {
				return true // full tunnel: not restricted
			}
			return fuzzContains(mine, dst) || dst == fuzzGW4 || (v6 && dst == fuzzGW6) || func() bool {
				for _, d := range dns {
					if d == dst {
						return true
					}
				}
				return false
			}()
		}

		srv := bareServer()
		sess := &Session{srv: srv, user: user, addr: fuzzAddr4}
		if v6 {
			sess.addr6 = fuzzAddr6
		}
		sess.pol.Store(cfg.pol.user(user))
		drops := func() uint64 {
			c := &srv.Counters
			return c.DropSpoofed.Load() + c.DropRestricted.Load() + c.DropNoIPv6.Load()
		}

		// The raw bytes as one packet: an error exactly when they are not IP.
		_, _, perr := ippkt.Addrs(pkts)
		if _, err := sess.check(pkts); (err != nil) != (perr != nil) {
			t.Fatalf("check of raw bytes: %v; ippkt.Addrs: %v", err, perr)
		}
		for ; len(pkts) >= 4; pkts = pkts[4:] {
			fam6 := pkts[0]&1 == 1
			src := fuzzPickAddr(pkts[0]>>1, pkts[1], fam6, dns)
			dst := fuzzPickAddr(pkts[2], pkts[3], fam6, dns)
			if dst.Is6() != fam6 {
				dst = fuzzPickAddr(3, pkts[3], fam6, nil)
			}
			srcOK := src == sess.addr || (v6 && src == sess.addr6) || fuzzContains(iroutes, src)
			want := srcOK && allowed(dst)
			before := drops()
			ok, err := sess.check(fuzzPacket(src, dst))
			if err != nil {
				t.Fatalf("%s -> %s: %v", src, dst, err)
			}
			if ok != want {
				t.Fatalf("%s -> %s accepted %v, want %v (restrict %v, routes %v, iroutes %v, DNS %v, IPv6 pool %v)",
					src, dst, ok, want, restrict, mine, iroutes, dns, v6)
			}
			if d := drops() - before; ok && d != 0 || !ok && d != 1 {
				t.Fatalf("%s -> %s accepted %v: %d drops counted", src, dst, ok, d)
			}
		}
	})
}

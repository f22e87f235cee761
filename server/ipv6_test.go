package server

import (
	"encoding/binary"
	"io"
	"kvpn/internal/testenv"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"kvpn/tun"
	"kvpn/tun/tuntest"
)

func TestIPv6ConfigValid(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `ipv6-network = "fd00:77::/64"
route = ["10.1.0.0/16", "fd00::/16"]
no-route = ["fd00:1::/64"]
listen = "[::]:443"
`), "/state")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.pool6 != netip.MustParsePrefix("fd00:77::/64") {
		t.Fatalf("pool6 = %v", cfg.pool6)
	}
	cfg, err = LoadConfig(writeConfig(t, "mtu = 1200\n"), "/state")
	if err != nil || cfg.pool6.IsValid() {
		t.Fatalf("no ipv6-network: pool6 %v, err %v (IPv6 is optional and a small MTU is fine without it)", cfg.pool6, err)
	}
}

// TestIPv6ConfigErrors: each bad ipv6-network setting is refused with an
// error naming the key and the problem.
func TestIPv6ConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`ipv6-network = "fd00::"`, "ipv6-network: netip.ParsePrefix"},
		{`ipv6-network = "10.0.0.0/24"`, "ipv6-network: \"10.0.0.0/24\" is not an IPv6 network"},
		{`ipv6-network = "::ffff:10.0.0.0/120"`, "is not an IPv6 network"},
		{`ipv6-network = "fd00::1/64"`, "has host bits set (did you mean fd00::/64?)"},
		{`ipv6-network = "fd00::/127"`, "is too small: need at least a /126"},
		{`ipv6-network = "fe80::/64"`, "is not a unicast network"},
		{`ipv6-network = "ff05::/64"`, "is not a unicast network"},
		{`ipv6-network = "::/0"`, "is not a unicast network"},
		{"ipv6-network = \"fd00::/64\"\nmtu = 1200", "ipv6-network: needs mtu 1280 or more"},
		{"ipv6-network = \"fd00::/64\"\nroute = [\"fd00::/80\"]", "route: fd00::/80 lies inside ipv6-network fd00::/64"},
		{"ipv6-network = \"fd00::/64\"\nno-route = [\"fd00::/96\"]", "no-route: fd00::/96 overlaps ipv6-network fd00::/64"},
		{"ipv6-network = \"fd00::/64\"\nlisten = \"[fd00::5]:443\"", "listen: fd00::5 lies inside ipv6-network"},
		{"ipv6-network = \"fd00::/64\"\nudp-listen = \"[fd00::5]:443\"", "udp-listen: fd00::5 lies inside ipv6-network"},
		{"ipv6-network = \"fd00::/64\"\n[users.site]\niroute = [\"fd00::/56\"]", "users.site.iroute: fd00::/56 overlaps ipv6-network fd00::/64"},
	} {
		_, err := LoadConfig(writeConfig(t, tc.body+"\n"), "/state")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: got %v, want error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestPoolIPv6(t *testing.T) {
	p := newPool(netip.MustParsePrefix("fd00::/126")) // ::0 anycast, ::1 server, ::2 and ::3 clients
	var got []string
	for range 2 {
		a, err := p.Get(netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if !slices.Equal(got, []string{"fd00::2", "fd00::3"}) {
		t.Fatalf("got %v, want fd00::2 and fd00::3 (IPv6 has no broadcast address)", got)
	}
	if _, err := p.Get(netip.Addr{}); err != errPoolExhausted {
		t.Fatalf("want exhaustion, got %v", err)
	}
	p.Put(netip.MustParseAddr("fd00::3"))
	if a, err := p.Get(netip.MustParseAddr("fd00::3")); err != nil || a.String() != "fd00::3" {
		t.Fatalf("after Put: %s %v", a, err)
	}

	// A /64 pool: the walk is bounded, a wanted address is honoured, the
	// server's and the anycast address never handed out.
	p = newPool(netip.MustParsePrefix("fd00:77::/64"))
	want := netip.MustParseAddr("fd00:77::abcd")
	if a, _ := p.Get(want); a != want {
		t.Fatalf("got %s want %s", a, want)
	}
	for _, bad := range []string{"fd00:77::", "fd00:77::1", "fd00:78::5", "10.0.0.5"} {
		if a, _ := p.Get(netip.MustParseAddr(bad)); a.String() == bad {
			t.Fatalf("unusable address %s handed out", bad)
		}
	}
	if a, _ := p.Get(netip.Addr{}); !p.usable(a) || a == want {
		t.Fatalf("Get returned %s", a)
	}
	if last := netip.MustParseAddr("fd00:77::ffff:ffff:ffff:ffff"); !p.usable(last) {
		t.Fatal("the last address of an IPv6 pool is a normal address")
	}
}

func TestSplitIncludeAddsIPv6Pool(t *testing.T) {
	s := &Server{cfg: &Config{pool6: netip.MustParsePrefix("fd00:77::/64")}}
	a6 := netip.MustParseAddr("fd00:77::2")
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range ss {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	for _, tc := range []struct {
		routes []netip.Prefix
		addr6  netip.Addr
		want   []netip.Prefix
	}{
		{nil, a6, nil}, // full tunnel stays full
		{pfx("10.1.0.0/16"), a6, pfx("10.1.0.0/16", "fd00:77::/64")},
		{pfx("10.1.0.0/16", "fd00::/16"), a6, pfx("10.1.0.0/16", "fd00::/16")}, // covered
		{pfx("10.1.0.0/16", "fd00:77::/64"), a6, pfx("10.1.0.0/16", "fd00:77::/64")},
		{pfx("10.1.0.0/16"), netip.Addr{}, pfx("10.1.0.0/16")}, // no IPv6 for this session
	} {
		routes := slices.Clone(tc.routes)
		got := s.splitInclude(routes, tc.addr6)
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitInclude(%v, %v) = %v, want %v", tc.routes, tc.addr6, got, tc.want)
		}
		if !slices.Equal(routes, tc.routes) {
			t.Errorf("splitInclude changed its input: %v", routes)
		}
	}
}

func TestLinkBaseIPv6(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	if got := tunnelMTU(DefaultMTU, linkBase(1500, v6)); got != 1500-40-8-37-1 {
		t.Errorf("IPv6 link of 1500: MTU %d, want %d", got, 1500-40-8-37-1)
	}
	if got := tunnelMTU(DefaultMTU, linkBase(1500, v4)); got != DefaultMTU {
		t.Errorf("IPv4 link of 1500: MTU %d, want %d", got, DefaultMTU)
	}
	if got := linkBase(0, v6); got != 0 {
		t.Errorf("no X-CSTP-Base-MTU over IPv6: %d, want 0 (configured MTU applies)", got)
	}
}

func TestListenFamily(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{{"127.0.0.1:0", "127.0.0.1"}, {"[::1]:0", "::1"}} {
		ln, err := Listen(tc.addr)
		if err != nil {
			testenv.Unavailable(t, "a loopback address "+tc.addr, err)
		}
		got := ln.Addr().String()
		ln.Close()
		if !strings.HasPrefix(got, tc.want) && !strings.HasPrefix(got, "["+tc.want+"]") {
			t.Errorf("Listen(%s) listens on %s", tc.addr, got)
		}
	}
	if ln, err := Listen("[::]:0"); err == nil {
		defer ln.Close()
		if !strings.HasPrefix(ln.Addr().String(), "[::]:") {
			t.Errorf("Listen([::]:0) listens on %s", ln.Addr())
		}
	}
}

// ipv6Packet returns a minimal IPv6 packet (header only) from src to dst.
func ipv6Packet(src, dst string) []byte {
	p := make([]byte, 40)
	p[0] = 0x60
	p[6] = 59 // no next header
	p[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	return p
}

// ipv4Packet returns a minimal IPv4 packet (header only) from src to dst.
func ipv4Packet(src, dst string) []byte {
	p := make([]byte, 20)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], 20)
	p[8] = 64
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return p
}

func bareServer() *Server {
	return &Server{
		cfg:      &Config{MTU: DefaultMTU},
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		byAddr:   map[netip.Addr]*Session{},
		sessions: map[*Session]struct{}{},
	}
}

// TestCheckIPv6Source: a session accepts its own IPv6 source, drops and
// counts a foreign one as spoofed, and drops link-local noise quietly; a
// session without an IPv6 address drops every IPv6 packet quietly.
func TestCheckIPv6Source(t *testing.T) {
	s := bareServer()
	with := &Session{srv: s, addr: netip.MustParseAddr("10.77.0.2"), addr6: netip.MustParseAddr("fd00:77::2")}
	without := &Session{srv: s, addr: netip.MustParseAddr("10.77.0.3")}
	for _, tc := range []struct {
		name            string
		sess            *Session
		pkt             []byte
		ok              bool
		spoofed, noIPv6 uint64
	}{
		{"own IPv6", with, ipv6Packet("fd00:77::2", "fd00:77::1"), true, 0, 0},
		{"own IPv4", with, ipv4Packet("10.77.0.2", "10.77.0.1"), true, 0, 0},
		{"foreign IPv6", with, ipv6Packet("fd00:77::3", "fd00:77::1"), false, 1, 0},
		{"outside the pool", with, ipv6Packet("2001:db8::1", "fd00:77::1"), false, 1, 0},
		{"link-local", with, ipv6Packet("fe80::1", "ff02::2"), false, 0, 1},
		{"unspecified (MLD, DAD)", with, ipv6Packet("::", "ff02::16"), false, 0, 1},
		{"no IPv6 address", without, ipv6Packet("fd00:77::2", "fd00:77::1"), false, 0, 1},
		{"no IPv6 address, link-local", without, ipv6Packet("fe80::1", "ff02::2"), false, 0, 1},
	} {
		sp, no6 := s.Counters.DropSpoofed.Load(), s.Counters.DropNoIPv6.Load()
		ok, err := tc.sess.check(tc.pkt)
		if err != nil || ok != tc.ok {
			t.Errorf("%s: check = %v, %v; want %v", tc.name, ok, err, tc.ok)
		}
		if d := s.Counters.DropSpoofed.Load() - sp; d != tc.spoofed {
			t.Errorf("%s: spoofed drops +%d, want +%d", tc.name, d, tc.spoofed)
		}
		if d := s.Counters.DropNoIPv6.Load() - no6; d != tc.noIPv6 {
			t.Errorf("%s: no-IPv6 drops +%d, want +%d", tc.name, d, tc.noIPv6)
		}
	}
}

// TestRouteFromTUNIPv6: packets read from the TUN device reach the session
// owning their IPv6 (or IPv4) destination; others are counted as having
// no session.
func TestRouteFromTUNIPv6(t *testing.T) {
	s := bareServer()
	dev, kernel := tuntest.NewPair()
	s.dev = dev
	s.batches.New = func() any { return newBatch(s.cfg.MTU) }
	a := &Session{srv: s, addr: netip.MustParseAddr("10.77.0.2"), addr6: netip.MustParseAddr("fd00:77::2"), queue: make(chan *batch, 8)}
	b := &Session{srv: s, addr: netip.MustParseAddr("10.77.0.3"), addr6: netip.MustParseAddr("fd00:77::3"), queue: make(chan *batch, 8)}
	for _, sess := range []*Session{a, b} {
		s.byAddr[sess.addr], s.byAddr[sess.addr6] = sess, sess
		sess.connected.Store(true) // as attach does
	}
	go s.routeFromTUN()
	defer dev.Close()

	pkts := [][]byte{
		ipv6Packet("fd00:77::1", "fd00:77::2"),
		ipv6Packet("fd00:77::1", "fd00:77::3"),
		ipv4Packet("10.77.0.1", "10.77.0.2"),
		ipv6Packet("fd00:77::1", "fd00:77::99"), // nobody's
	}
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, tun.Headroom), p...)
	}
	if _, err := kernel.Write(bufs, tun.Headroom); err != nil {
		t.Fatal(err)
	}
	recv := func(sess *Session, n int) [][]byte {
		var got [][]byte
		for len(got) < n {
			select {
			case bt := <-sess.queue:
				for _, p := range bt.pkts[:bt.n] {
					got = append(got, slices.Clone(p[tun.Headroom:]))
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("session %s: got %d packets, want %d", sess.addr, len(got), n)
			}
		}
		return got
	}
	gotA, gotB := recv(a, 2), recv(b, 1)
	if !slices.EqualFunc(gotA, [][]byte{pkts[0], pkts[2]}, slices.Equal) {
		t.Errorf("session A got %x", gotA)
	}
	if !slices.Equal(gotB[0], pkts[1]) {
		t.Errorf("session B got %x", gotB)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Counters.DropNoSession.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Counters.DropNoSession.Load(); n != 1 {
		t.Errorf("no-session drops %d, want 1", n)
	}
}

// TestRestrictAllowsIPv6Gateway: under restrict-user-to-routes a client
// may still reach vpnd's IPv6 tunnel address, as it may the IPv4 one.
func TestRestrictAllowsIPv6Gateway(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `ipv6-network = "fd00:77::/64"
route = ["10.1.0.0/16"]
restrict-user-to-routes = true
`), "/state")
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.pol.def
	for _, tc := range []struct {
		dst  string
		want bool
	}{{"fd00:77::1", true}, {"10.77.0.1", true}, {"10.1.2.3", true}, {"fd00:77::3", false}, {"2001:db8::1", false}} {
		if got := u.allows(netip.MustParseAddr(tc.dst)); got != tc.want {
			t.Errorf("allows(%s) = %v, want %v", tc.dst, got, tc.want)
		}
	}
}

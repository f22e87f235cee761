package server

import (
	"net/netip"
	"testing"
)

func TestPoolAllocatesEveryHostOnce(t *testing.T) {
	p := newPool(netip.MustParsePrefix("10.9.0.0/29")) // .1 server, .2-.6 clients, .7 broadcast
	seen := map[netip.Addr]bool{}
	for i := 0; i < 5; i++ {
		a, err := p.Get(netip.Addr{})
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if seen[a] || !p.usable(a) {
			t.Fatalf("Get %d returned %s (seen=%v)", i, a, seen[a])
		}
		seen[a] = true
	}
	if _, err := p.Get(netip.Addr{}); err != errPoolExhausted {
		t.Fatalf("want exhaustion, got %v", err)
	}
	if n := p.InUse(); n != 5 {
		t.Fatalf("InUse %d with the pool full, want 5", n)
	}
	p.Put(netip.MustParseAddr("10.9.0.4"))
	if n := p.InUse(); n != 4 {
		t.Fatalf("InUse %d after a Put, want 4", n)
	}
	if a, err := p.Get(netip.Addr{}); err != nil || a != netip.MustParseAddr("10.9.0.4") {
		t.Fatalf("after Put: %s %v", a, err)
	}
	if got := p.netmask().String(); got != "255.255.255.248" {
		t.Fatalf("netmask %s", got)
	}
}

func TestPoolHonoursWantedAddress(t *testing.T) {
	p := newPool(netip.MustParsePrefix("10.9.0.0/24"))
	want := netip.MustParseAddr("10.9.0.77")
	if a, _ := p.Get(want); a != want {
		t.Fatalf("got %s want %s", a, want)
	}
	if a, _ := p.Get(want); a == want {
		t.Fatal("the same address was handed out twice")
	}
	for _, bad := range []string{"10.9.0.1", "10.9.0.255", "10.9.1.5"} {
		if a, _ := p.Get(netip.MustParseAddr(bad)); a.String() == bad {
			t.Fatalf("unusable address %s handed out", bad)
		}
	}
}

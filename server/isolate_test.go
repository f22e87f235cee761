package server

import (
	"net/netip"
	"testing"

	"kvpn/tun"
)

const isolateConfig = `ipv4-network = "10.77.0.0/24"
ipv6-network = "fd00:77::/64"
isolate-clients = true
[users.bob]
isolate-clients = false
`

// TestIsolateClients: isolate-clients drops packets between clients in
// both directions (the sender's check and the TUN routing to the
// receiver), per user, counted as client-to-client; vpnd's own address
// and everything else stay reachable; the checks allocate nothing.
func TestIsolateClients(t *testing.T) {
	ts := newTestServer(t, isolateConfig)
	ts.batches.New = func() any { return newBatch(ts.cfg.MTU) }
	alice, bob, carol := ts.connect(t, "alice"), ts.connect(t, "bob"), ts.connect(t, "carol")
	a, b, c := alice.addr.String(), bob.addr.String(), carol.addr.String()
	if checkOK(t, alice, a, b) || checkOK(t, carol, c, a) {
		t.Error("isolated users reached other clients")
	}
	if ts.Counters.DropIsolated.Load() != 2 {
		t.Errorf("client-to-client drops %d, want 2", ts.Counters.DropIsolated.Load())
	}
	if !checkOK(t, alice, a, "10.77.0.1") || !checkOK(t, alice, a, "192.0.2.7") {
		t.Error("an isolated user lost vpnd's address or the outside")
	}
	// bob is not isolated: his packet to alice passes his check, and is
	// dropped on its way from the TUN device to alice; to carol too.
	if !checkOK(t, bob, b, a) {
		t.Error("bob's own check dropped his packet to alice")
	}
	route := func(src, dst string) int {
		pkt := ipv4Pkt(src, dst)
		buf := make([]byte, tun.Headroom+len(pkt))
		copy(buf[tun.Headroom:], pkt)
		open := ts.routeBatch([][]byte{buf}, []int{len(pkt)}, nil)
		n := 0
		for _, p := range open {
			n += p.b.n
			ts.putBatch(p.b)
		}
		return n
	}
	before := ts.Counters.DropIsolated.Load()
	if route(b, a) != 0 || route(c, a) != 0 {
		t.Error("a packet from another client reached an isolated user")
	}
	if route("10.77.0.1", a) != 1 || route("192.0.2.7", a) != 1 || route(a, b) != 1 {
		t.Error("a packet to a client from vpnd, the outside or to a non-isolated user was dropped")
	}
	if d := ts.Counters.DropIsolated.Load() - before; d != 2 {
		t.Errorf("client-to-client drops on the TUN side %d, want 2", d)
	}
	if n := ts.Snapshot().Drops["client-to-client"]; n != 4 {
		t.Errorf("client-to-client in the snapshot: %d, want 4", n)
	}
	// IPv6 client addresses count too; vpnd's own stays reachable.
	iso := alice.pol.Load().iso
	if !iso.client(netip.MustParseAddr("fd00:77::5")) || iso.client(netip.MustParseAddr("fd00:77::1")) ||
		iso.client(netip.MustParseAddr("2001:db8::1")) {
		t.Error("IPv6 isolation")
	}
	pkt := ipv4Pkt(a, b)
	if n := testing.AllocsPerRun(1000, func() { alice.check(pkt) }); n != 0 {
		t.Errorf("check allocates %v times", n)
	}
	// Off by default.
	free := newTestServer(t, `ipv4-network = "10.77.0.0/24"`)
	x, y := free.connect(t, "x"), free.connect(t, "y")
	if !checkOK(t, x, x.addr.String(), y.addr.String()) {
		t.Error("clients isolated without isolate-clients")
	}
}

// TestIsolateClientsReload: a reload that turns isolate-clients on
// applies to connected sessions from their next packet.
func TestIsolateClientsReload(t *testing.T) {
	ts := newTestServer(t, `ipv4-network = "10.77.0.0/24"`)
	x, y := ts.connect(t, "x"), ts.connect(t, "y")
	if !checkOK(t, x, x.addr.String(), y.addr.String()) {
		t.Fatal("dropped before the reload")
	}
	cfg, err := LoadConfig(writeConfig(t, `ipv4-network = "10.77.0.0/24"
isolate-clients = true`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts.polMu.Lock()
	err = ts.applyPolicy(cfg.pol)
	ts.polMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if checkOK(t, x, x.addr.String(), y.addr.String()) {
		t.Fatal("isolate-clients not applied by the policy swap")
	}
}

// TestIsolateClientsGroups: a group's isolate-clients overrides the
// global one for its users, and a user's own overrides the group's.
func TestIsolateClientsGroups(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `ipv4-network = "10.77.0.0/24"
[groups.eng]
isolate-clients = true
[groups.ops]
route = ["10.88.0.0/16"]
[users.bob]
isolate-clients = false
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, group string
		want        bool
	}{
		{"alice", "eng", true}, {"alice", "ops", false}, {"alice", "", false},
		{"bob", "eng", false}, {"bob", "", false},
	} {
		if got := cfg.pol.userIn(tc.user, tc.group).iso.on; got != tc.want {
			t.Errorf("%s in group %q: isolated %v, want %v", tc.user, tc.group, got, tc.want)
		}
	}
}

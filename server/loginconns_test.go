package server

import (
	"net/netip"
	"testing"
)

// TestLoginConnsEvictOldestInHandshake: a full per-address bound closes
// that address's oldest connection still in its handshake (not another
// address's), a full total bound the oldest of all, connections past
// their handshake are never closed for a newcomer, and a bound whose
// connections are all past it refuses the newcomer.
func TestLoginConnsEvictOldestInHandshake(t *testing.T) {
	var lc loginConns
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	closed := map[string]bool{}
	acquire := func(name string, from netip.Addr) (*loginConn, int, bool) {
		return lc.acquire(from, 4, 2, func() { closed[name] = true })
	}
	a1, _, _ := acquire("a1", a)
	b1, _, _ := acquire("b1", b)
	a1.handshakeDone()
	acquire("a2", a)
	// a is full (a1 past its handshake, a2 in it): a3 closes a2.
	if _, n, ok := acquire("a3", a); !ok || n != 1 || !closed["a2"] || closed["a1"] {
		t.Fatalf("a3: ok %v, evicted %d, closed %v", ok, n, closed)
	}
	acquire("b2", b) // total 4: a1, b1, a3, b2
	// The total is full: the oldest in its handshake of all goes (b1).
	c := netip.MustParseAddr("192.0.2.3")
	if _, n, ok := acquire("c1", c); !ok || n != 1 || !closed["b1"] {
		t.Fatalf("c1: ok %v, evicted %d, closed %v", ok, n, closed)
	}
	b1.release() // after its eviction: a no-op
	if lc.total != 4 {
		t.Fatalf("total %d after releasing an evicted connection, want 4", lc.total)
	}
	// Every connection of a past its handshake: the newcomer is refused.
	for e := lc.byAddr[connKey(a)].pending.Front(); e != nil; e = lc.byAddr[connKey(a)].pending.Front() {
		e.Value.(*loginConn).handshakeDone()
	}
	if _, _, ok := acquire("a4", a); ok {
		t.Fatal("a4 admitted past a full bound with nothing to evict")
	}
	a1.release()
	if _, _, ok := acquire("a5", a); !ok {
		t.Fatal("a5 refused after a1 left")
	}
}

package server

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// pool hands out tunnel addresses of one family (vpnd has an IPv4 pool and
// optionally an IPv6 one). The first host address of the network belongs
// to the server's TUN interface; the rest go to clients.
// Allocation walks round-robin from the last address handed out, so a freed
// address is not reused at once (a stale peer's packets would land on the
// wrong client).
type pool struct {
	mu      sync.Mutex
	network netip.Prefix
	gateway netip.Addr
	used    map[netip.Addr]bool
	next    netip.Addr
	// reserved are users' fixed addresses ([users.NAME] ipv4): Get never
	// hands them out, only GetFixed does.
	reserved map[netip.Addr]bool
}

var errPoolExhausted = errors.New("address pool exhausted")

func newPool(network netip.Prefix) *pool {
	gw := network.Addr().Next()
	return &pool{network: network, gateway: gw, used: map[netip.Addr]bool{}, next: gw.Next()}
}

// broadcast reports whether a is the IPv4 broadcast address (the last of
// the network). IPv6 has no broadcast address.
func (p *pool) broadcast(a netip.Addr) bool {
	return a.Is4() && !p.network.Contains(a.Next())
}

// usable reports whether a may be given to a client.
func (p *pool) usable(a netip.Addr) bool {
	return p.network.Contains(a) && a != p.network.Addr() && a != p.gateway && !p.broadcast(a)
}

// Get allocates an address. A valid want is honoured when free, so a
// reconnecting client can keep its address.
func (p *pool) Get(want netip.Addr) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if want.IsValid() && p.usable(want) && !p.used[want] && !p.reserved[want] {
		p.used[want] = true
		return want, nil
	}
	a := p.next
	for range p.span() {
		if !p.network.Contains(a) {
			a = p.network.Addr() // wrap around
		}
		if p.usable(a) && !p.used[a] && !p.reserved[a] {
			p.used[a] = true
			p.next = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, errPoolExhausted
}

// GetFixed allocates a user's fixed address a, which must be usable and
// not in use.
func (p *pool) GetFixed(a netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.usable(a) {
		return fmt.Errorf("fixed address %s is not a client address of %s", a, p.network)
	}
	if p.used[a] {
		return fmt.Errorf("fixed address %s is in use by another session", a)
	}
	p.used[a] = true
	return nil
}

// Reserve replaces the set of fixed addresses Get must not hand out.
// Addresses already in use stay with their sessions.
func (p *pool) Reserve(fixed map[netip.Addr]string) {
	r := make(map[netip.Addr]bool, len(fixed))
	for a := range fixed {
		r[a] = true
	}
	p.mu.Lock()
	p.reserved = r
	p.mu.Unlock()
}

// span is how many addresses a full walk of the network visits: all of
// them, capped at 2^32 for IPv6 networks (a walk never gets that far: it
// stops at the first free address, and a session table holds far fewer).
func (p *pool) span() uint64 {
	return uint64(1) << min(p.network.Addr().BitLen()-p.network.Bits(), 32)
}

// Put frees a.
func (p *pool) Put(a netip.Addr) {
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}

// InUse counts the addresses handed out (fixed ones included).
func (p *pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used)
}

// netmask returns the pool's netmask as a dotted-quad address, for
// X-CSTP-Netmask.
func (p *pool) netmask() netip.Addr {
	bits := p.network.Bits()
	m := ^uint32(0) << (32 - bits)
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

package server

import (
	"container/list"
	"net/netip"
	"sync"
)

// loginConns counts the connections that have not logged in yet (from
// accept until their CONNECT, or until they close), in all and per source
// address (IPv6 per /64), so that idle or slow handshakes cannot use up the
// daemon's file descriptors and memory.
//
// A bound reached does not refuse the newcomer while an older connection
// of the same bound has not finished its TLS handshake: that one is closed
// instead, as sshd's MaxStartups drops unauthenticated connections rather
// than stop accepting. A connection that sends no ClientHello (or stalls in
// the middle of one) costs its sender nothing, so refusing newcomers would
// let 10k of them lock every user out for the login timeout; closing the
// oldest makes a flood push out only what the flood itself, and the
// slowest handshakes, hold. A connection past its handshake has cost its
// client a TLS handshake and is bounded by the login timeout: it is never
// closed for a newcomer, and only when every connection of a full bound is
// past its handshake is the newcomer refused.
type loginConns struct {
	mu      sync.Mutex
	total   int
	byAddr  map[netip.Prefix]*addrConns
	pending list.List // *loginConn still in their TLS handshake, oldest first
}

// addrConns is one source address's share of loginConns.
type addrConns struct {
	n       int
	pending list.List // *loginConn still in their TLS handshake, oldest first
}

// loginConn is one connection counted in loginConns.
type loginConn struct {
	lc    *loginConns
	key   netip.Prefix
	close func() // closes the connection (eviction)
	// el and addrEl are the connection's places in the pending lists, nil
	// once its handshake is done; counted is false once it is released
	// or evicted.
	el, addrEl *list.Element
	counted    bool
}

// acquire counts one more connection from addr, which close closes, within
// maxTotal and maxPerAddr (0 = no bound). At a full bound it evicts the
// oldest connection of that bound still in its TLS handshake (evicted
// reports how many); ok is false when there was none to evict.
func (lc *loginConns) acquire(addr netip.Addr, maxTotal, maxPerAddr int, close func()) (c *loginConn, evicted int, ok bool) {
	k := connKey(addr)
	var victims []*loginConn
	defer func() {
		// Closing outside the lock: a Close may wait on the socket.
		for _, v := range victims {
			v.close()
		}
	}()
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.byAddr == nil {
		lc.byAddr = map[netip.Prefix]*addrConns{}
	}
	ac := lc.byAddr[k]
	if maxPerAddr > 0 && ac != nil && ac.n >= maxPerAddr {
		if ac.pending.Len() == 0 {
			return nil, 0, false
		}
		victims = append(victims, lc.evictLocked(ac.pending.Front().Value.(*loginConn)))
	}
	if maxTotal > 0 && lc.total >= maxTotal {
		if lc.pending.Len() == 0 {
			return nil, len(victims), false
		}
		victims = append(victims, lc.evictLocked(lc.pending.Front().Value.(*loginConn)))
	}
	if ac = lc.byAddr[k]; ac == nil {
		ac = &addrConns{}
		lc.byAddr[k] = ac
	}
	c = &loginConn{lc: lc, key: k, close: close, counted: true}
	lc.total++
	ac.n++
	c.el = lc.pending.PushBack(c)
	c.addrEl = ac.pending.PushBack(c)
	return c, len(victims), true
}

// evictLocked stops counting c and returns it for closing.
func (lc *loginConns) evictLocked(c *loginConn) *loginConn {
	lc.releaseLocked(c)
	return c
}

// handshakeDone marks c as past its TLS handshake: it is no longer evicted
// for newcomers.
func (c *loginConn) handshakeDone() {
	c.lc.mu.Lock()
	defer c.lc.mu.Unlock()
	c.lc.unlistLocked(c)
}

// release stops counting c, once, however often it is called (also after
// an eviction).
func (c *loginConn) release() {
	c.lc.mu.Lock()
	defer c.lc.mu.Unlock()
	c.lc.releaseLocked(c)
}

func (lc *loginConns) releaseLocked(c *loginConn) {
	if !c.counted {
		return
	}
	c.counted = false
	lc.unlistLocked(c)
	lc.total--
	ac := lc.byAddr[c.key]
	if ac.n--; ac.n <= 0 {
		delete(lc.byAddr, c.key)
	}
}

// unlistLocked takes c out of the pending lists.
func (lc *loginConns) unlistLocked(c *loginConn) {
	if c.el == nil {
		return
	}
	lc.pending.Remove(c.el)
	lc.byAddr[c.key].pending.Remove(c.addrEl)
	c.el, c.addrEl = nil, nil
}

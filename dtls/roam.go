package dtls

import (
	"net/netip"
	"time"

	"kvpn/dtls/recordlayer"
)

const (
	// roamCandidates is the most peers one datagram from an unknown
	// address is trial-decrypted against (one AEAD open each).
	roamCandidates = 32
	// sameIPCandidates of them are peers of the source's own IP, the
	// rest peers elsewhere.
	sameIPCandidates = 24
	// roamScan is the most peers one datagram looks at, of the source's
	// IP and of others each, while choosing candidates (no crypto, just
	// the filters of roamCandidatesFor): 10k load-generator sessions from
	// one address must not make each unknown datagram walk all of them.
	roamScan = 256
	// roamOpensPerSourcePerSecond bounds the trial opens spent on the
	// datagrams of one source IP, so junk from one address (an office
	// NAT's, say) cannot use up the global budget (roamOpensPerSecond)
	// the other sources' peers roam with.
	roamOpensPerSourcePerSecond = roamOpensPerSecond / 2
)

// ipPeers are the peers routed from addresses of one IP, the first
// candidates for a datagram from a new port of that IP. next rotates the
// scan, so that over successive datagrams every peer of the IP is tried,
// however many there are.
type ipPeers struct {
	peers []*Peer
	next  int
}

// route makes p the peer of address a, and keeps byIP in step. Callers
// hold l.mu.
func (l *Listener) route(a netip.AddrPort, p *Peer) {
	if old := l.byAddr[a]; old != nil {
		if old == p {
			return
		}
		l.unindex(a.Addr(), old)
	}
	l.byAddr[a] = p
	ip := l.byIP[a.Addr()]
	if ip == nil {
		ip = &ipPeers{}
		l.byIP[a.Addr()] = ip
	}
	ip.peers = append(ip.peers, p)
}

// unroute forgets address a if p is its peer. Callers hold l.mu.
func (l *Listener) unroute(a netip.AddrPort, p *Peer) {
	if l.byAddr[a] != p {
		return
	}
	delete(l.byAddr, a)
	l.unindex(a.Addr(), p)
}

// unindex removes p from the peers of IP a. Callers hold l.mu.
func (l *Listener) unindex(a netip.Addr, p *Peer) {
	ip := l.byIP[a]
	if ip == nil {
		return
	}
	for i, q := range ip.peers {
		if q == p {
			last := len(ip.peers) - 1
			ip.peers[i] = ip.peers[last]
			ip.peers[last] = nil
			ip.peers = ip.peers[:last]
			break
		}
	}
	if len(ip.peers) == 0 {
		delete(l.byIP, a)
	}
}

// roamCandidatesFor lists into buf the peers a data record from src is
// trial-decrypted against: established peers without connection IDs
// (those roam by CID, see receiveCID), first those at another port of
// src's IP, then others. A NAT rebinding usually keeps the public IP and
// changes the port (RFC 4787 section 4.1: a new mapping gets a new
// external port), so those come first, in turn over successive datagrams
// (ip.next); the rest are a sample from elsewhere (a Go map's iteration
// starts at a random place), so that a client whose NAT changed its
// public IP is found too, if over more datagrams.
func (l *Listener) roamCandidatesFor(src netip.AddrPort, buf []*Peer) []*Peer {
	usable := func(p *Peer) bool {
		d := p.d.Load()
		return d != nil && !p.closed.Load() && d.cidLen == 0
	}
	l.mu.Lock() // Lock, not RLock: the scan moves ip.next
	defer l.mu.Unlock()
	if ip := l.byIP[src.Addr()]; ip != nil {
		n := len(ip.peers)
		start := ip.next % n
		looked := 0
		for ; looked < min(n, roamScan) && len(buf) < sameIPCandidates; looked++ {
			if p := ip.peers[(start+looked)%n]; usable(p) {
				buf = append(buf, p)
			}
		}
		ip.next = (start + looked) % n
	}
	looked := 0
	for a, p := range l.byAddr {
		if len(buf) == roamCandidates || looked == roamScan {
			break
		}
		looked++
		if a.Addr() != src.Addr() && usable(p) {
			buf = append(buf, p)
		}
	}
	return buf
}

// roam finds the established peer that a data record from an unknown
// address belongs to, by authenticating it with candidate peers' keys
// (NAT rebinding: the client's source port changed). A record that
// authenticates proves the sender holds the session keys; the peer then
// moves to the new address. Each trial costs an AEAD open, so they are
// bounded per datagram (roamCandidates, chosen among at most 2*roamScan
// peers), per source IP per second (roamSource) and globally per second
// (roamBudget), whatever the sources. The record is decrypted in a copy,
// so a failed trial leaves dg intact for the next one.
func (l *Listener) roam(src netip.AddrPort, dg []byte, out [][]byte) ([][]byte, bool) {
	rec, _, err := recordlayer.NextRecord(dg)
	if err != nil {
		return out, false
	}
	if l.roamBudget.empty() {
		// Before listing the peers: under a flood that alone costs time.
		l.roamLimited(src)
		return out, false
	}
	var cbuf [roamCandidates]*Peer
	peers := l.roamCandidatesFor(src, cbuf[:0])
	if len(peers) == 0 {
		l.Counters.RoamNoCandidate.Add(1)
		return out, false
	}
	want := len(peers)
	n := l.roamSource.take(src.Addr(), want)
	if n < want {
		l.Counters.RoamSourceLimit.Add(1)
		l.roamWarn(src, "dtls: roaming trial budget of this source IP used up; datagram from an unknown port not fully tried")
	}
	got := l.roamBudget.take(n)
	if got < n {
		l.roamSource.returnTokens(src.Addr(), n-got)
		l.roamLimited(src)
	}
	if got == 0 {
		return out, false
	}
	peers = peers[:got]
	scratch := make([]byte, len(rec))
	for i, p := range peers {
		d := p.d.Load()
		copy(scratch, rec)
		t, payload, err := d.tryOpen(scratch)
		if err != nil {
			continue
		}
		// The opens not spent go back to the budgets.
		l.Counters.RoamOpens.Add(uint64(i + 1))
		l.roamSource.returnTokens(src.Addr(), got-i-1)
		l.roamBudget.give(got - i - 1)
		l.move(p, src, "trial-authentication")
		out, _ = p.dispatch(d, scratch, 0, t, payload, false, out)
		return out, true
	}
	l.Counters.RoamOpens.Add(uint64(got))
	return out, false
}

// roamLimited counts a datagram the global roaming budget left (partly)
// untried; logged at most once per 5 seconds.
func (l *Listener) roamLimited(src netip.AddrPort) {
	l.Counters.RoamLimit.Add(1)
	l.roamWarn(src, "dtls: roaming trial budget used up; datagram from an unknown address not fully tried")
}

// roamWarn logs msg at most once per 5 seconds for all roaming limits.
func (l *Listener) roamWarn(src netip.AddrPort, msg string) {
	now := time.Now().UnixNano()
	if last := l.lastRoamWarn.Load(); now-last > int64(5*time.Second) && l.lastRoamWarn.CompareAndSwap(last, now) {
		l.log.Warn(msg, "from", src.String(), "dtls-roam-limit-total", l.Counters.RoamLimit.Load(),
			"dtls-roam-source-limit-total", l.Counters.RoamSourceLimit.Load())
	}
}

// move re-homes p at src once a record from there authenticated (how says
// how the peer was found, for the log).
func (l *Listener) move(p *Peer, src netip.AddrPort, how string) {
	old := p.Addr()
	l.mu.Lock()
	l.unroute(old, p)
	l.route(src, p)
	l.mu.Unlock()
	p.setAddr(src)
	l.Counters.Roamed.Add(1)
	l.log.Info("dtls: peer moved to a new address", "from", old.String(), "to", src.String(), "by", how)
}

// receiveCID handles a connection-ID record for peer p. From a new
// address it must authenticate before the peer moves there (roaming
// without trial decryption); pion's retransmitted Finished, which our
// Opener refuses as a replay, goes to pion.
func (l *Listener) receiveCID(p *Peer, src netip.AddrPort, dg []byte, out [][]byte) [][]byte {
	d := p.d.Load()
	if d == nil {
		p.feed.Feed(dg)
		return out
	}
	if src == p.Addr() {
		return p.receive(d, dg, out)
	}
	rec, _, err := d.nextRecord(dg)
	if err != nil {
		l.Counters.BadRecords.Add(1)
		return out
	}
	scratch := append([]byte(nil), rec...)
	t, payload, err := d.tryOpen(scratch)
	if err != nil {
		l.Counters.BadRecords.Add(1)
		return out
	}
	l.move(p, src, "connection-id")
	out, _ = p.dispatch(d, scratch, 0, t, payload, false, out)
	return out
}

package dtls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"

	"kvpn/dtls/recordlayer"
	"kvpn/internal/contain"
)

// Bringing a peer up: the DTLS handshake (pion/dtls, PSK-NEGOTIATE or the
// legacy AnyConnect resumption) run for a ClientHello that named a known
// session, then the keys handed to kvpn's own record layer.

// startHandshake begins a pion server handshake for a ClientHello whose
// App-ID names a session.
func (l *Listener) startHandshake(src netip.AddrPort, appID, hello []byte) {
	m, ok := l.cfg.Find(appID)
	if !ok {
		l.Counters.NoSession.Add(1)
		l.warnRateLimited("dtls: ClientHello names no session", "from", src.String())
		return
	}
	if l.handshakes.Load() >= maxHandshakes {
		l.Counters.HandshakeBusy.Add(1)
		l.warnRateLimited("dtls: too many handshakes in progress", "from", src.String(), "max", maxHandshakes)
		return
	}
	var id [AppIDLen]byte
	copy(id[:], appID)
	if !l.appIDLimit.allow(id) {
		l.Counters.HandshakeLimit.Add(1)
		l.warnRateLimited("dtls: handshake rate limit of the session reached", "from", src.String())
		return
	}
	p := &Peer{l: l, owner: m.Owner}
	p.setAddr(src)
	p.feed = newFeedConn(l.cfg.Conn.LocalAddr(), net.UDPAddrFromAddrPort(src), func(b []byte) error {
		_, err := l.cfg.Conn.WriteToUDPAddrPort(b, p.Addr())
		return err
	})
	l.mu.Lock()
	if old := l.byAddr[src]; old != nil && old.Up() {
		if prev := l.pending[src]; prev != nil {
			prev.closed.Store(true)
			prev.feed.Close()
		}
		l.pending[src] = p
		p.replacing = old
	} else {
		l.route(src, p)
	}
	l.mu.Unlock()
	p.feed.Feed(hello)
	l.handshakes.Add(1)
	go func() {
		defer l.handshakes.Add(-1)
		defer func() {
			// A bug in one handshake (pion's or the owner's PeerUp)
			// closes that peer, not the server.
			if v := recover(); v != nil {
				contain.Recovered(l.log, "DTLS handshake", v, &l.Counters.HandshakePanics, "from", src.String())
				p.Close()
			}
		}()
		if m.Legacy != nil {
			p.legacyHandshake(*m.Legacy)
			return
		}
		p.handshake(m.PSK, Suites(m.ChaCha), m.CID)
	}()
}

func (l *Listener) remove(p *Peer) {
	l.mu.Lock()
	if cid := p.cid; cid != "" && l.byCID[cid] == p {
		delete(l.byCID, cid)
	}
	l.unroute(p.Addr(), p)
	if l.pending[p.Addr()] == p {
		delete(l.pending, p.Addr())
	}
	l.mu.Unlock()
}

// promote makes a completed pending handshake the peer of its address.
func (l *Listener) promote(p *Peer) {
	l.mu.Lock()
	old := p.replacing
	if l.pending[p.Addr()] == p {
		delete(l.pending, p.Addr())
		l.route(p.Addr(), p)
	}
	l.mu.Unlock()
	if old != nil {
		old.Close() // safe: it is no longer the address's peer
	}
}

func (p *Peer) handshake(psk []byte, suites []piondtls.CipherSuiteID, cid bool) {
	start := time.Now()
	opts := []piondtls.ServerOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		piondtls.WithCipherSuites(suites...),
		piondtls.WithLoggerFactory(quietPion()),
	}
	if cid {
		opts = append(opts, piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(CIDLen)))
	}
	pc, err := piondtls.ServerWithOptions(p.feed, net.UDPAddrFromAddrPort(p.Addr()), opts...)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err = pc.HandshakeContext(ctx)
		cancel()
	}
	var keys recordlayer.Keys
	if err == nil {
		p.feed.handshakeDone() // before the export: see handshakeDone
		keys, err = recordlayer.KeysFromConn(pc)
	}
	var hs handshakeConn
	if pc != nil {
		hs = pc
	}
	p.established(start, hs, keys, err)
}

// established finishes a handshake that produced keys (or failed with
// err): the datapath takes over from the handshake's conn hs (pion's, or
// a stand-in for the legacy handshake), early data is delivered, and the
// owner gets the peer.
func (p *Peer) established(start time.Time, hs handshakeConn, keys recordlayer.Keys, err error) {
	var d *datapath
	if err == nil && len(keys.LocalCID) > CIDLen {
		// The CID the client chose goes into every record we send: a
		// longer one than kvpn's own would not fit the headroom the
		// session leaves in front of packets (tun.Headroom).
		err = fmt.Errorf("dtls: client chose a connection ID of %d bytes, at most %d", len(keys.LocalCID), CIDLen)
	}
	if err == nil {
		d, err = newDatapath(keys)
	}
	if err != nil {
		p.l.Counters.HandshakeFailed.Add(1)
		p.l.log.Info("dtls: handshake failed", "from", p.Addr().String(), "err", err)
		if hs != nil {
			hs.Close() // no application data yet: safe to close
		}
		p.Close()
		return
	}
	p.feed.takeOver(hs, guardFor(d), func(n uint64) { p.l.feedDropped(p, n) })
	p.l.Counters.HandshakeTime.Observe(time.Since(start))
	p.emu.Lock()
	p.d.Store(d)
	if len(keys.RemoteCID) > 0 {
		p.cid = string(keys.RemoteCID)
		p.l.mu.Lock()
		p.l.byCID[p.cid] = p
		p.l.mu.Unlock()
	}
	early := p.early
	p.early = nil
	p.emu.Unlock()
	p.l.promote(p)
	for _, dg := range early {
		if out := p.receive(d, dg, nil); len(out) > 0 {
			p.l.cfg.Sink.Write(out, SinkHeadroom)
		}
	}
	p.l.log.Debug("dtls: handshake complete", "from", p.Addr().String(), "suite", d.suiteName())
	p.owner.PeerUp(p)
}

// handshakeConn is what the datapath takes over from a handshake: pion's
// Conn, or legacyDone.
type handshakeConn interface {
	Read([]byte) (int, error)
	Close() error
}

// legacyDone stands in for pion's Conn after a legacy handshake: nothing
// is left to answer (the server's flight is not the last one), so it only
// blocks reads until closed.
type legacyDone struct {
	once sync.Once
	done chan struct{}
}

func (c *legacyDone) Read([]byte) (int, error) { <-c.done; return 0, io.EOF }

func (c *legacyDone) Close() error { c.once.Do(func() { close(c.done) }); return nil }

// legacyHandshake resumes the session's legacy DTLS offer (legacy.go).
func (p *Peer) legacyHandshake(lg Legacy) {
	start := time.Now()
	keys, err := legacyHandshake(p.feed, lg, func() { p.l.Counters.BadRecords.Add(1) })
	switch {
	case errors.Is(err, errFinished):
		p.l.Counters.LegacyBadFinished.Add(1)
	case errors.Is(err, errHelloMalformed) || errors.Is(err, errHelloSuite) || errors.Is(err, errHelloSession):
		p.l.Counters.LegacyBadHello.Add(1)
	}
	if err == nil {
		p.feed.handshakeDone()
		p.l.log.Debug("dtls: legacy handshake resumed", "from", p.Addr().String(),
			"suite", lg.Suite.Name, "version", lg.Suite.VersionName())
	} else {
		err = fmt.Errorf("legacy %s %s: %w", lg.Suite.VersionName(), lg.Suite.Name, err)
	}
	p.established(start, &legacyDone{done: make(chan struct{})}, keys, err)
}

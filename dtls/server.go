package dtls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"

	"kvpn/cstp"
	"kvpn/dtls/record"
	"kvpn/internal/contain"
	"kvpn/internal/hist"
	"kvpn/session"
	"kvpn/udp"
)

// Owner is the server session a DTLS peer belongs to.
type Owner interface {
	// Check vets a packet from the peer before it reaches the TUN device
	// (anti-spoofing), as for the TLS channel.
	Check(pkt []byte) (bool, error)
	// PeerUp is called when a handshake completes; the owner replaces (and
	// closes) any earlier peer.
	PeerUp(p *Peer)
}

// Match is what a Finder knows of the session a ClientHello names.
type Match struct {
	Owner  Owner
	PSK    []byte // exported from the session's current TLS connection
	ChaCha bool   // the kvpn ChaCha20 extension was negotiated
	CID    bool   // the kvpn connection-ID extension was negotiated
	// Legacy, if set, is the session's legacy AnyConnect DTLS offer: the
	// ClientHello resumes it (legacy.go) instead of a PSK handshake.
	Legacy *Legacy
}

// Finder looks up the session whose X-DTLS-App-ID is appID.
type Finder func(appID []byte) (Match, bool)

// ListenerConfig configures the server side.
type ListenerConfig struct {
	Conn *udp.Conn // receives, and sends for every peer
	// Readers are more sockets of Conn's SO_REUSEPORT group
	// (udp.ListenGroup), each read by a goroutine of its own.
	Readers []*udp.Conn
	Find    Finder
	TUN     session.PacketWriter
	Log     *slog.Logger
}

// Counters are the listener's drop counters.
type Counters struct {
	NoSession      atomic.Uint64 // datagram that matches no peer and no session
	HandshakeLimit atomic.Uint64 // handshakes refused by their session's rate limit
	// HandshakeBusy counts handshakes refused because maxHandshakes were
	// already in progress (the bound on their memory).
	HandshakeBusy   atomic.Uint64
	HandshakeFailed atomic.Uint64
	BadRecords      atomic.Uint64 // failed authentication, replay, bad epoch
	Roamed          atomic.Uint64 // peers that moved to a new address
	// RoamLimit counts datagrams from unknown addresses that the global
	// trial-decryption budget left (partly) untried; RoamOpens the trial
	// AEAD opens spent. RoamSourceLimit counts datagrams the budget of
	// their source IP left (partly) untried, RoamNoCandidate those that
	// had no peer to be tried against.
	RoamLimit       atomic.Uint64
	RoamSourceLimit atomic.Uint64
	RoamNoCandidate atomic.Uint64
	RoamOpens       atomic.Uint64
	Rejected        atomic.Uint64 // packets refused by Owner.Check
	Coalesced       atomic.Uint64 // datagrams that arrived merged by UDP GRO
	// FeedDropped counts handshake datagrams from an established peer's
	// address that pion was not fed because its window after the takeover
	// was over or its budget used up (see feedConn).
	FeedDropped   atomic.Uint64
	HandshakeTime hist.Latency // completed handshakes, ClientHello to keys taken over
	// Failures contained rather than taking the daemon down or spinning
	// (issue #12): recovered panics of a socket's reader (restarted after
	// a backoff) and of a handshake's goroutine (its peer closed), each
	// logged with its stack, and failed socket reads, each followed by a
	// backoff.
	ReaderPanics    atomic.Uint64
	HandshakePanics atomic.Uint64
	ReadErrors      atomic.Uint64
	// LegacyBadFinished counts legacy handshakes whose client Finished did
	// not authenticate or verify (a master secret other than the one the
	// client sent on TLS); LegacyBadHello ClientHellos that did not fit
	// the legacy offer (malformed, another suite or version).
	LegacyBadFinished atomic.Uint64
	LegacyBadHello    atomic.Uint64
}

// Listener demultiplexes the server's UDP socket: datagrams from a known
// address go to that peer (data records to kvpn's record layer, handshake
// records to pion), a ClientHello from a new address is routed by its
// App-ID, and anything else is dropped and counted.
type Listener struct {
	cfg ListenerConfig
	log *slog.Logger

	mu     sync.RWMutex
	byAddr map[netip.AddrPort]*Peer
	// pending holds a handshake started from an established peer's
	// address until it completes and replaces that peer.
	pending map[netip.AddrPort]*Peer
	// byCID finds peers that negotiated connection IDs (RFC 9146): their
	// records name them wherever they come from.
	byCID map[string]*Peer
	// byIP holds byAddr's peers by IP: the first candidates for a
	// datagram from an unknown port (roam). Kept by route and unroute.
	byIP map[netip.Addr]*ipPeers

	// handshakes counts the handshakes in progress (at most
	// maxHandshakes).
	handshakes atomic.Int64

	// Separate budgets, so that neither junk nor one session eats
	// another's: handshakes per session (App-ID; a ClientHello naming an
	// App-ID handed out on an authenticated TLS connection is never
	// limited by its source address, which a whole office NAT may share),
	// and trial decryptions for roaming per source IP and across all
	// sources (counted in AEAD opens).
	appIDLimit   *rateLimiter[[AppIDLen]byte]
	roamSource   *rateLimiter[netip.Addr]
	roamBudget   *globalBucket
	lastWarn     atomic.Int64
	lastFeedWarn atomic.Int64
	lastRoamWarn atomic.Int64
	lastReadWarn atomic.Int64

	// testPanic, nil but in tests, is called by a socket's reader after
	// each read that returned datagrams, so a test can make it panic.
	testPanic func()

	Counters Counters
}

const (
	// recvBatch is how many datagrams one recvmmsg may return.
	recvBatch = 64
	// recvBufSize holds any datagram.
	recvBufSize = 65536
	// tunOffset is the headroom handed to the TUN device in front of each
	// decrypted packet (the virtio-net header goes there); every DTLS
	// record has at least 13 header bytes in front of its payload.
	tunOffset = 10
	// handshakeTimeout bounds a server-side handshake.
	handshakeTimeout = 10 * time.Second
	// handshakesPerSecond limits the handshakes one session (App-ID)
	// starts.
	handshakesPerSecond = 5
	// maxHandshakes bounds the handshakes in progress, each a pion Conn
	// and goroutine for up to handshakeTimeout: the App-ID travels in
	// clear in the ClientHello (RFC 6347 section 4.2.1, session_id), so
	// an on-path observer can replay ones it saw from spoofed sources.
	// A refused client retransmits its ClientHello (RFC 6347 section
	// 4.2.4) and is let in once others complete.
	maxHandshakes = 4096
	// roamOpensPerSecond bounds the AEAD opens spent on trial
	// authentication (roaming without connection IDs) across all sources:
	// each costs about a microsecond, so this caps the reader's time on
	// junk from spoofed sources at a few milliseconds per second.
	roamOpensPerSecond = 4096
	// limiterEntries bounds each per-key table.
	limiterEntries = 16384
)

// NewListener prepares a listener; Serve runs it.
func NewListener(cfg ListenerConfig) *Listener {
	return &Listener{cfg: cfg, log: cfg.Log, byAddr: map[netip.AddrPort]*Peer{}, pending: map[netip.AddrPort]*Peer{}, byCID: map[string]*Peer{},
		byIP:       map[netip.Addr]*ipPeers{},
		appIDLimit: newRateLimiter[[AppIDLen]byte](handshakesPerSecond, handshakesPerSecond, limiterEntries),
		roamSource: newRateLimiter[netip.Addr](roamOpensPerSourcePerSecond, roamOpensPerSourcePerSecond, limiterEntries),
		roamBudget: newGlobalBucket(roamOpensPerSecond, roamOpensPerSecond)}
}

// Serve reads datagrams until the socket is closed: one reader per
// socket of the group (Conn and Readers), each with buffers of its own.
func (l *Listener) Serve() error {
	var wg sync.WaitGroup
	for _, c := range l.cfg.Readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.serve(c)
		}()
	}
	l.serve(l.cfg.Conn)
	wg.Wait()
	return nil
}

// batchReader is the receiving side of a socket (*udp.Conn).
type batchReader interface {
	ReadBatch(msgs []udp.Message) (int, error)
	EnableGRO() bool
}

// serve runs one socket's reader until the socket is closed. The reader is
// shared by every session: a panic in it is recovered, logged with its
// stack and counted (Counters.ReaderPanics), and it starts again after a
// backoff (contain.Loop).
func (l *Listener) serve(conn batchReader) {
	contain.Loop(l.log, "DTLS reader", &l.Counters.ReaderPanics, func() { l.serveConn(conn) })
}

// serveConn is one socket's receive loop, the server's DTLS upstream hot
// loop. A read that fails (other than on a closed socket) is counted
// (Counters.ReadErrors) and followed by a backoff, from contain.ReadMin
// doubling to contain.ReadMax and reset by the next read that succeeds, so
// that a socket failing every read cannot turn the loop into a spin.
func (l *Listener) serveConn(conn batchReader) {
	msgs := make([]udp.Message, recvBatch)
	bufs := make([][]byte, recvBatch)
	mem := make([]byte, recvBatch*recvBufSize)
	oob := make([]byte, recvBatch*udp.OOBSize)
	for i := range msgs {
		bufs[i] = mem[i*recvBufSize : (i+1)*recvBufSize : (i+1)*recvBufSize]
		msgs[i].Buffers = [][]byte{bufs[i]}
		msgs[i].OOB = oob[i*udp.OOBSize : (i+1)*udp.OOBSize]
	}
	var sp *spill
	if conn.EnableGRO() {
		sp = newSpill()
	}
	out := make([][]byte, 0, recvBatch)
	var backoff contain.Backoff
	for {
		n, err := conn.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c := l.Counters.ReadErrors.Add(1)
			d := backoff.Next()
			now := time.Now().UnixNano()
			if last := l.lastReadWarn.Load(); now-last > int64(5*time.Second) && l.lastReadWarn.CompareAndSwap(last, now) {
				l.log.Warn("dtls: socket read failed; backing off", "err", err, "retry-in", d.String(), "read-errors", c)
			}
			time.Sleep(d)
			continue
		}
		backoff.Reset()
		if l.testPanic != nil {
			l.testPanic()
		}
		for i := range n {
			ua, ok := msgs[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			src := ua.AddrPort()
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			dg := bufs[i][:msgs[i].N]
			seg := 0
			if sp != nil {
				seg = udp.SegmentSize(&msgs[i])
			}
			if seg == 0 {
				out = l.handle(src, dg, out)
				continue
			}
			out = l.handleCoalesced(src, dg, seg, sp, out)
		}
		out = l.writeTUN(out)
		if sp != nil {
			sp.reset()
		}
	}
}

// handleCoalesced handles a datagram that UDP GRO coalesced from
// datagrams of seg bytes (the last may be shorter). Every one but the first
// is copied to a spill buffer of its own before any is decrypted: each
// packet then owns a buffer whose spare capacity the TUN device's GRO may
// fill, and the first keeps its place (and the receive buffer's capacity).
func (l *Listener) handleCoalesced(src netip.AddrPort, dg []byte, seg int, sp *spill, out [][]byte) [][]byte {
	segments := (len(dg) + seg - 1) / seg
	l.Counters.Coalesced.Add(uint64(segments))
	if segments-1 > len(sp.bufs) {
		// More than the kernel coalesces (UDP_GRO_CNT_MAX is 64): decrypt
		// in place, each packet capped so that none spills into the next.
		for off := 0; off < len(dg); off += seg {
			end := min(off+seg, len(dg))
			out = l.handle(src, dg[off:end:end], out)
		}
		return out
	}
	if !sp.room(segments - 1) {
		// Earlier packets still sit in the spill buffers: send them on
		// before the buffers are reused.
		out = l.writeTUN(out)
		sp.reset()
	}
	first := sp.used
	for off := seg; off < len(dg); off += seg {
		sp.add(dg[off:min(off+seg, len(dg))])
	}
	out = l.handle(src, dg[:seg], out)
	for j := first; j < sp.used; j++ {
		out = l.handle(src, sp.dgs[j], out)
	}
	return out
}

// writeTUN writes the decrypted packets in out to the TUN device and
// returns out emptied.
func (l *Listener) writeTUN(out [][]byte) [][]byte {
	if len(out) > 0 {
		l.cfg.TUN.Write(out, tunOffset)
		clear(out)
	}
	return out[:0]
}

// handle routes one datagram; decrypted packets are appended to out.
func (l *Listener) handle(src netip.AddrPort, dg []byte, out [][]byte) [][]byte {
	if len(dg) == 0 {
		return out
	}
	if dg[0] == byte(record.ConnectionID) {
		if cid, ok := record.PeekCID(dg, CIDLen); ok {
			l.mu.RLock()
			p := l.byCID[string(cid)]
			l.mu.RUnlock()
			if p != nil {
				return l.receiveCID(p, src, dg, out)
			}
		}
	}
	handshake := dg[0] == byte(record.Handshake) || dg[0] == byte(record.ChangeCipherSpec)
	l.mu.RLock()
	p, pend := l.byAddr[src], l.pending[src]
	l.mu.RUnlock()
	if handshake && pend != nil {
		// A new handshake from an established peer's address is under way.
		pend.feed.Feed(dg)
		return out
	}
	if p != nil {
		if !handshake {
			if d := p.d.Load(); d != nil {
				return p.receive(d, dg, out)
			}
			p.holdEarly(dg) // data racing the end of the handshake
			if dg[0] == byte(record.ConnectionID) {
				// Possibly the client's Finished: pion needs it.
				p.feed.Feed(dg)
			}
			return out
		}
		if p.d.Load() != nil {
			// A ClientHello from an established peer: the client restarts
			// DTLS, or it is a stale copy of the first one. The new
			// handshake runs beside the old channel, which stays until
			// the new one completes.
			if appID, err := ClientHelloAppID(dg); err == nil {
				l.startHandshake(src, appID, dg)
				return out
			}
		}
		p.feed.Feed(dg) // handshake in progress, or a retransmitted flight
		return out
	}
	if appID, err := ClientHelloAppID(dg); err == nil {
		l.startHandshake(src, appID, dg)
		return out
	}
	if dg[0] == byte(record.ApplicationData) {
		var roamed bool
		if out, roamed = l.roam(src, dg, out); roamed {
			return out
		}
	}
	l.Counters.NoSession.Add(1)
	l.warnRateLimited("dtls: dropped datagram matching no session", "from", src.String(), "bytes", len(dg))
	return out
}

// warnRateLimited logs at most once per 5 seconds.
func (l *Listener) warnRateLimited(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last > int64(5*time.Second) && l.lastWarn.CompareAndSwap(last, now) {
		l.log.Warn(msg, append(args, "no-session-total", l.Counters.NoSession.Load())...)
	}
}

// feedDropped counts a handshake datagram from p's address that its pion
// was not fed after the takeover; logged at most once per 5 seconds.
func (l *Listener) feedDropped(p *Peer, n uint64) {
	total := l.Counters.FeedDropped.Add(1)
	now := time.Now().UnixNano()
	last := l.lastFeedWarn.Load()
	if now-last > int64(5*time.Second) && l.lastFeedWarn.CompareAndSwap(last, now) {
		l.log.Warn("dtls: dropped handshake datagram after takeover (feed window over or budget used up)",
			"from", p.Addr().String(), "bytes", n, "dtls-handshake-after-takeover-total", total)
	}
}

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

// Peer is one client's DTLS channel on the server. It implements the
// sending half of a session channel; receiving is done by the Listener.
type Peer struct {
	l     *Listener
	owner Owner
	addr  atomic.Pointer[peerAddr]
	feed  *feedConn                // holds pion's Conn until its window ends (feedConn.endWindow)
	d     atomic.Pointer[datapath] // nil until the handshake completes

	// wmu orders sealing and sending (the replay window wants sequence
	// numbers in order); the vectors come from peerWrites per call, and
	// each call has a writer of its own, so sessions send at once.
	wmu sync.Mutex

	replacing *Peer  // the established peer this handshake replaces
	cid       string // the connection ID the client puts in its records, if any

	emu   sync.Mutex
	early [][]byte // data records that raced the end of the handshake

	closed atomic.Bool
}

// holdEarly keeps a data record that arrived before the keys were taken
// over (the client finishes its handshake first and may send at once).
func (p *Peer) holdEarly(dg []byte) {
	p.emu.Lock()
	defer p.emu.Unlock()
	if d := p.d.Load(); d != nil {
		// The takeover happened meanwhile: deliver directly.
		if out := p.receive(d, dg, nil); len(out) > 0 {
			p.l.cfg.TUN.Write(out, tunOffset)
		}
		return
	}
	if len(p.early) < maxEarly {
		p.early = append(p.early, append([]byte(nil), dg...))
	}
}

type peerAddr struct {
	ap netip.AddrPort
	ua *net.UDPAddr // for batched writes, made once per address
}

func (p *Peer) setAddr(a netip.AddrPort) {
	p.addr.Store(&peerAddr{ap: a, ua: net.UDPAddrFromAddrPort(a)})
}

// Addr is the peer's current address.
func (p *Peer) Addr() netip.AddrPort { return p.addr.Load().ap }

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
	var keys record.Keys
	if err == nil {
		p.feed.handshakeDone() // before the export: see handshakeDone
		keys, err = record.KeysFromConn(pc)
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
func (p *Peer) established(start time.Time, hs handshakeConn, keys record.Keys, err error) {
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
			p.l.cfg.TUN.Write(out, tunOffset)
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
func (c *legacyDone) Close() error             { c.once.Do(func() { close(c.done) }); return nil }

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

// receive processes a datagram of data records (usually one) from p.
func (p *Peer) receive(d *datapath, dg []byte, out [][]byte) [][]byte {
	full := dg
	single := true
	for len(dg) > 0 {
		off := len(full) - len(dg) // the record's offset in the datagram
		rec, rest, err := d.nextRecord(dg)
		if err != nil {
			d.Stats.BadRecords.Add(1)
			p.l.Counters.BadRecords.Add(1)
			return out
		}
		if len(rest) > 0 {
			single = false
		}
		dg = rest
		t, payload, err := d.open(rec)
		if err != nil {
			if rec[0] == byte(record.ConnectionID) && errors.Is(err, record.ErrReplay) {
				p.feed.Feed(rec) // pion's retransmitted Finished (CID mode)
				continue
			}
			if errors.Is(err, errAlert) {
				p.l.log.Info("dtls: peer sent an alert; closing its DTLS channel", "from", p.Addr().String(), "err", err)
				p.Close()
				return out
			}
			p.l.Counters.BadRecords.Add(1)
			continue
		}
		var stop bool
		out, stop = p.dispatch(d, full, off, t, payload, single, out)
		if stop {
			return out
		}
	}
	return out
}

// dispatch acts on one decrypted record. It reports whether the rest of
// the datagram should be ignored.
func (p *Peer) dispatch(d *datapath, dg []byte, off int, t cstp.FrameType, payload []byte, single bool, out [][]byte) ([][]byte, bool) {
	// An authenticated record proves the peer has our Finished: pion
	// need not answer any more retransmissions.
	p.feed.peerAuthenticated()
	switch t {
	case cstp.TypeData:
		// The packet sits in the datagram buffer behind the record header,
		// which leaves room for the virtio-net header the TUN write puts
		// in front. The view is derived from the payload the opener
		// returned (packetAt), and that one view is checked and written.
		v := d.packetAt(dg, off, payload)
		if v == nil {
			p.l.Counters.BadRecords.Add(1)
			return out, false
		}
		keep, err := p.owner.Check(v[tunOffset:])
		if err != nil || !keep {
			p.l.Counters.Rejected.Add(1)
			return out, false
		}
		d.received(len(payload))
		// For a datagram of one record the view keeps the buffer's
		// capacity (the TUN device's GRO may append coalesced segments
		// there); otherwise it is capped so the next record stays intact.
		if !single {
			v = v[:len(v):len(v)]
		}
		return append(out, v), false
	case cstp.TypeDPDReq:
		// Also openconnect's MTU probe: echo the whole payload.
		p.sendControl(cstp.TypeDPDResp, payload)
	case cstp.TypeDisconnect:
		// openconnect says goodbye on DTLS before its TLS DISCONNECT; the
		// session ends with the latter.
		p.Close()
		return out, true
	}
	return out, false
}

// Up reports whether the handshake completed and the peer is not closed.
func (p *Peer) Up() bool { return p.d.Load() != nil && !p.closed.Load() }

// Close forgets the peer and closes pion's Conn (see feedConn.closePion).
func (p *Peer) Close() error {
	if p.closed.CompareAndSwap(false, true) {
		p.feed.closeAll()
		p.l.remove(p)
	}
	return nil
}

func (p *Peer) Name() string {
	if d := p.d.Load(); d != nil {
		return "dtls/" + d.suiteName()
	}
	return "dtls"
}

func (p *Peer) LastReceive() time.Time { return p.d.Load().LastReceive() }
func (p *Peer) LastSend() time.Time    { return p.d.Load().LastSend() }
func (p *Peer) Ping() error            { return p.sendControl(cstp.TypeDPDReq, nil) }
func (p *Peer) Keepalive() error       { return p.sendControl(cstp.TypeKeepalive, nil) }

// Stats returns the peer's counters.
func (p *Peer) Stats() *Stats { return &p.d.Load().Stats }

func (p *Peer) sendControl(t cstp.FrameType, payload []byte) error {
	d := p.d.Load()
	if d == nil || p.closed.Load() {
		return net.ErrClosed
	}
	d.cmu.Lock()
	defer d.cmu.Unlock()
	rec, err := d.sealControl(t, payload)
	if err != nil {
		p.sealFailed(err)
		return err
	}
	if _, err := p.l.cfg.Conn.WriteToUDPAddrPort(rec, p.Addr()); err != nil {
		return err
	}
	d.lastSend.Store(time.Now().UnixNano())
	return nil
}

// sealFailed closes the peer if its sequence numbers ran out: RFC 6347
// section 4.1 forbids wrapping, and a record number used twice repeats the
// AEAD nonce. The session carries on over TLS (a new DTLS handshake gets
// new keys).
func (p *Peer) sealFailed(err error) {
	if errors.Is(err, record.ErrSeqExhausted) {
		p.l.log.Warn("dtls: sequence numbers exhausted; closing the DTLS channel", "from", p.Addr().String())
		p.Close()
	}
}

// ErrSealed marks a WritePackets error after packets of the batch were
// sealed in place: their plaintext is gone, so they cannot be sent another
// way (over TLS). An error without it left every packet as it was.
var ErrSealed = errors.New("dtls: send failed after sealing the packets in place")

// WritePackets seals each packet in place and sends the batch with
// sendmmsg. Buffers need Headroom() bytes in front and Tailroom behind.
// An error matching ErrSealed means the packets were (partly) sealed and
// not (all) sent.
func (p *Peer) WritePackets(bufs [][]byte, offset int) error {
	d := p.d.Load()
	if d == nil || p.closed.Load() {
		return net.ErrClosed
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	pw := getPeerWrite(p.l.cfg.Conn, len(bufs))
	defer putPeerWrite(pw)
	msgs := pw.msgs[:len(bufs)]
	ua := p.addr.Load().ua
	bytes := 0
	for i, b := range bufs {
		n := len(b) - offset
		rec, err := d.seal(b[:cap(b)], offset, n, cstp.TypeData)
		if err != nil {
			p.sealFailed(err)
			if i > 0 {
				return fmt.Errorf("%w: %w", ErrSealed, err)
			}
			return err
		}
		msgs[i].Buffers[0] = rec
		msgs[i].Addr = ua
		bytes += n
	}
	err := pw.w.WriteBatch(msgs)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSealed, err)
	}
	d.sent(len(bufs), bytes)
	return nil
}

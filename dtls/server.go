package dtls

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/dtls/recordlayer"
	"kvpn/internal/contain"
	"kvpn/internal/hist"
	"kvpn/session"
	"kvpn/udp"
)

// Owner is the server session a DTLS peer belongs to.
type Owner interface {
	// Check vets a packet from the peer before it goes to the Sink
	// (anti-spoofing, routes): the check the session's TLS packets pass.
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
	// Sink takes the decrypted packets that passed their owner's Check,
	// in batches, each with SinkHeadroom free bytes in front: the
	// server's uplink, the same that takes the packets its sessions
	// receive over TLS. The listener never writes to a device itself.
	Sink session.PacketWriter
	Log  *slog.Logger
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
	// SinkHeadroom is the headroom handed to the Sink in front of each
	// decrypted packet: the server's TUN writer puts the virtio-net header
	// there (tun.VirtioHdrLen). Every DTLS record has at least 13 header bytes
	// in front of its payload, so the room is free.
	SinkHeadroom = 10
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
		out = l.deliver(out)
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
		out = l.deliver(out)
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

// deliver hands the decrypted packets in out to the sink and returns out
// emptied.
func (l *Listener) deliver(out [][]byte) [][]byte {
	if len(out) > 0 {
		l.cfg.Sink.Write(out, SinkHeadroom)
		clear(out)
	}
	return out[:0]
}

// handle routes one datagram; decrypted packets are appended to out.
func (l *Listener) handle(src netip.AddrPort, dg []byte, out [][]byte) [][]byte {
	if len(dg) == 0 {
		return out
	}
	if dg[0] == byte(recordlayer.ConnectionID) {
		if cid, ok := recordlayer.PeekCID(dg, CIDLen); ok {
			l.mu.RLock()
			p := l.byCID[string(cid)]
			l.mu.RUnlock()
			if p != nil {
				return l.receiveCID(p, src, dg, out)
			}
		}
	}
	handshake := dg[0] == byte(recordlayer.Handshake) || dg[0] == byte(recordlayer.ChangeCipherSpec)
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
			if dg[0] == byte(recordlayer.ConnectionID) {
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
	if dg[0] == byte(recordlayer.ApplicationData) {
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

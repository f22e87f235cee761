package dtls

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
)

// A peer once it is up: records from its datagrams opened and dispatched
// (data to the listener's sink, DPD answered), packets and control frames sealed and
// sent to its address.

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
			p.l.cfg.Sink.Write(out, SinkHeadroom)
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
			if rec[0] == byte(recordlayer.ConnectionID) && errors.Is(err, recordlayer.ErrReplay) {
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
		keep, err := p.owner.Check(v[SinkHeadroom:])
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

func (p *Peer) LastSend() time.Time { return p.d.Load().LastSend() }

func (p *Peer) Ping() error { return p.sendControl(cstp.TypeDPDReq, nil) }

func (p *Peer) Keepalive() error { return p.sendControl(cstp.TypeKeepalive, nil) }

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
	if errors.Is(err, recordlayer.ErrSeqExhausted) {
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

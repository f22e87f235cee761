package dtls

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
)

// ReplayWindow is how many records back the replay window reaches. Packets
// on a busy tunnel can be reordered by more than pion's default of 64.
const ReplayWindow = 4096

// datapath holds one DTLS channel's record protection and liveness. In
// OpenConnect's DTLS every application-data record carries one CSTP type
// byte (same codes as CSTP frames) followed by the packet; there is no
// length field (openconnect dtls.c, ocserv worker-vpn.c).
type datapath struct {
	keys   recordlayer.Keys
	sealer *recordlayer.Sealer
	// omu guards opener (its replay window): a peer's records are read by
	// one socket's reader, but a roaming trial, a record held during the
	// handshake or a move between sockets of the group may come from
	// another.
	omu    sync.Mutex
	opener *recordlayer.Opener
	hr     int // bytes in front of a packet we send: record headroom + type byte
	// rhr is the same for a record we receive: its header carries the
	// connection ID we chose (RemoteCID), not the one the peer chose for
	// ours (LocalCID, in hr), and the two lengths may differ (RFC 9146
	// section 3: each side picks the CID it receives).
	rhr    int
	cidLen int // length of the connection ID in records from the peer (0: none)

	lastRecv atomic.Int64 // unix nanoseconds
	lastSend atomic.Int64

	cmu  sync.Mutex
	ctrl []byte // scratch for control records

	Stats Stats
}

// Stats counts a DTLS channel's traffic and drops.
type Stats struct {
	RxPackets, RxBytes atomic.Uint64
	TxPackets, TxBytes atomic.Uint64
	BadRecords         atomic.Uint64 // failed authentication, replay, bad epoch
	// Coalesced counts datagrams that arrived merged with others by UDP
	// GRO (client side; the server counts them in Counters.Coalesced).
	Coalesced atomic.Uint64
	// FeedDropped counts handshake datagrams not fed to pion after the
	// takeover (client side; the server counts them in
	// Counters.FeedDropped).
	FeedDropped atomic.Uint64
}

// seqGap is recordlayer.SeqGap; tests make it small to show that the write
// guard of feedConn, not the size of the gap, keeps pion's sequence
// numbers below the Sealer's.
var seqGap uint64 = recordlayer.SeqGap

func newDatapath(keys recordlayer.Keys) (*datapath, error) {
	sealer, err := recordlayer.NewSealer(keys, keys.LocalSeq+seqGap)
	if err != nil {
		return nil, err
	}
	opener, err := recordlayer.NewOpener(keys, ReplayWindow)
	if err != nil {
		return nil, err
	}
	d := &datapath{keys: keys, sealer: sealer, opener: opener, hr: sealer.Headroom() + 1,
		rhr: keys.Suite.Headroom() + len(keys.RemoteCID) + 1, cidLen: len(keys.RemoteCID)}
	now := time.Now().UnixNano()
	d.lastRecv.Store(now)
	d.lastSend.Store(now)
	return d, nil
}

// packetAt returns the view of dg that carries the decrypted packet
// payload with SinkHeadroom bytes in front, found from the receive headroom,
// or nil if that view is not payload itself (a record whose layout
// differs from the one expected): what is checked is what is written.
func (d *datapath) packetAt(dg []byte, off int, payload []byte) []byte {
	start := off + d.rhr
	if start < SinkHeadroom || start+len(payload) > cap(dg) {
		return nil
	}
	v := dg[start-SinkHeadroom : start+len(payload)]
	if len(payload) > 0 && &v[SinkHeadroom] != &payload[0] {
		return nil
	}
	return v
}

// Headroom is the room a packet needs in front of it for the record header,
// explicit nonce and type byte; Tailroom the room behind it for the tag.
func (d *datapath) Headroom() int { return d.hr }

// With a connection ID the inner content type takes one more byte.
const Tailroom = max(recordlayer.Tailroom+1, recordlayer.CBCTailroom)

// CIDLen is the length of the connection IDs kvpn generates (RFC 9146),
// between two kvpn peers only (the dtls-cid extension).
const CIDLen = 8

// nextRecord splits the next record off a datagram from the peer.
func (d *datapath) nextRecord(dg []byte) ([]byte, []byte, error) {
	if d.cidLen > 0 {
		return recordlayer.NextRecordCID(dg, d.cidLen)
	}
	return recordlayer.NextRecord(dg)
}

// seal turns the packet at buf[off:off+n] into a record in place.
func (d *datapath) seal(buf []byte, off, n int, t cstp.FrameType) ([]byte, error) {
	if off < d.hr {
		return nil, fmt.Errorf("dtls: headroom %d < %d", off, d.hr)
	}
	buf[off-1] = byte(t)
	return d.sealer.Seal(buf, off-1, n+1, recordlayer.ApplicationData)
}

// sealControl builds a control record (DPD, keepalive) in the scratch
// buffer. The caller holds cmu until the record is sent.
func (d *datapath) sealControl(t cstp.FrameType, payload []byte) ([]byte, error) {
	need := d.hr + len(payload) + d.sealer.Tailroom()
	if cap(d.ctrl) < need {
		d.ctrl = make([]byte, need)
	}
	buf := d.ctrl[:need]
	copy(buf[d.hr:], payload)
	return d.seal(buf, d.hr, len(payload), t)
}

// errAlert reports an alert record from the peer (close_notify and fatal
// alerts end the channel).
var errAlert = errors.New("dtls: peer sent an alert")

// open authenticates and decrypts one record in place. For application
// data it returns the CSTP type and the payload after the type byte.
func (d *datapath) open(rec []byte) (cstp.FrameType, []byte, error) {
	ct, pt, err := d.openLocked(rec)
	if err != nil {
		d.Stats.BadRecords.Add(1)
		return 0, nil, err
	}
	return d.decode(ct, pt)
}

// tryOpen is open for a record that may not be this peer's at all (the
// roaming trial): a failure is not counted against the peer.
func (d *datapath) tryOpen(rec []byte) (cstp.FrameType, []byte, error) {
	ct, pt, err := d.openLocked(rec)
	if err != nil {
		return 0, nil, err
	}
	return d.decode(ct, pt)
}

// openLocked runs the opener under omu, unlocked by a defer: a panic on
// a crafted record, which the socket's reader recovers from, must not
// leave the peer's records locked out for the restarted reader.
func (d *datapath) openLocked(rec []byte) (recordlayer.ContentType, []byte, error) {
	d.omu.Lock()
	defer d.omu.Unlock()
	return d.opener.Open(rec)
}

// decode interprets an authenticated record.
func (d *datapath) decode(ct recordlayer.ContentType, pt []byte) (cstp.FrameType, []byte, error) {
	d.lastRecv.Store(time.Now().UnixNano())
	switch ct {
	case recordlayer.ApplicationData:
		if len(pt) == 0 {
			return 0, nil, errors.New("dtls: empty application record")
		}
		return cstp.FrameType(pt[0]), pt[1:], nil
	case recordlayer.Alert:
		return 0, nil, fmt.Errorf("%w (level %d, description %d)", errAlert, at(pt, 0), at(pt, 1))
	default:
		return 0, nil, fmt.Errorf("dtls: unexpected record type %d", ct)
	}
}

func at(b []byte, i int) int {
	if i < len(b) {
		return int(b[i])
	}
	return -1
}

func (d *datapath) LastReceive() time.Time { return time.Unix(0, d.lastRecv.Load()) }
func (d *datapath) LastSend() time.Time    { return time.Unix(0, d.lastSend.Load()) }

func (d *datapath) sent(pkts, bytes int) {
	d.lastSend.Store(time.Now().UnixNano())
	d.Stats.TxPackets.Add(uint64(pkts))
	d.Stats.TxBytes.Add(uint64(bytes))
}

func (d *datapath) received(bytes int) {
	d.Stats.RxPackets.Add(1)
	d.Stats.RxBytes.Add(uint64(bytes))
}

// Suite names the record protection for logs.
func (d *datapath) suiteName() string { return d.keys.Suite.String() }

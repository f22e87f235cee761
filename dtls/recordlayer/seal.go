package recordlayer

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// Sealer protects outgoing records. It is safe for concurrent use: the
// sequence number is an atomic counter and the AEAD is stateless, so several
// goroutines may seal into their own buffers at once (their records then
// leave in any order, which the peer's replay window absorbs).
type Sealer struct {
	aead     cipher.AEAD
	iv       [12]byte // first 4 bytes for GCM
	epoch    uint16
	suite    Suite
	chacha   bool
	headroom int
	tailroom int
	cbc      *cbcState     // CBC suites: MAC-then-encrypt (cbc.go)
	cid      []byte        // Keys.LocalCID; empty: plain records
	aad      []byte        // cidAADTemplate(epoch, cid), if cid
	next     atomic.Uint64 // next sequence number to use
}

// NewSealer returns a Sealer for k's local direction whose first record has
// sequence number start. Pass k.SealerStart() (k.LocalSeq+SeqGap): a start
// below k.LocalSeq would repeat a nonce pion already used and is refused.
// If k.LocalCID is not empty, every record carries it (RFC 9146).
func NewSealer(k Keys, start uint64) (*Sealer, error) {
	p, ok := k.Suite.params()
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrSuite, k.Suite)
	}
	if err := k.check(p, k.LocalKey, k.LocalIV, k.LocalMACKey, k.LocalCID); err != nil {
		return nil, err
	}
	if start < k.LocalSeq {
		return nil, fmt.Errorf("record: sealer start %d below pion's next sequence number %d: nonces would repeat",
			start, k.LocalSeq)
	}
	if start > MaxSeq {
		return nil, ErrSeqExhausted
	}
	s := &Sealer{epoch: k.Epoch, suite: k.Suite, chacha: p.chacha,
		headroom: k.Suite.Headroom(), tailroom: tagLen}
	if p.cbc {
		c, err := newCBC(k.LocalKey, k.LocalMACKey, k.Version, true)
		if err != nil {
			return nil, err
		}
		s.cbc, s.tailroom = c, CBCTailroom
		s.next.Store(start)
		return s, nil
	}
	a, err := newAEAD(p, k.LocalKey)
	if err != nil {
		return nil, err
	}
	s.aead = a
	if len(k.LocalCID) > 0 {
		s.cid = bytes.Clone(k.LocalCID)
		s.aad = cidAADTemplate(k.Epoch, s.cid)
		s.headroom += len(s.cid)
		s.tailroom++ // the real content type
	}
	copy(s.iv[:], k.LocalIV)
	s.next.Store(start)
	return s, nil
}

// Suite is the sealer's cipher suite.
func (s *Sealer) Suite() Suite { return s.suite }

// Headroom is the number of bytes Seal needs in front of the payload:
// s.Suite().Headroom(), plus the length of the connection ID if there is
// one.
func (s *Sealer) Headroom() int { return s.headroom }

// Tailroom is the number of bytes Seal needs behind the payload: the tag
// (the package's Tailroom, 16), plus one for the real content type if the
// records carry a connection ID.
func (s *Sealer) Tailroom() int { return s.tailroom }

// Overhead is Headroom plus Tailroom: what a record adds to its payload.
// Without a connection ID it is s.Suite().Overhead().
func (s *Sealer) Overhead() int { return s.headroom + s.tailroom }

// CID returns the connection ID the records carry (Keys.LocalCID), nil if
// none. The caller must not modify it.
func (s *Sealer) CID() []byte { return s.cid }

// Next returns the sequence number the next Seal will use.
func (s *Sealer) Next() uint64 { return s.next.Load() }

// Seal protects the payload buf[off:off+n] in place: it writes the record
// header (and for GCM the explicit nonce) into buf[off-s.Headroom():off] and
// the tag into buf[off+n:off+n+s.Tailroom()], and returns the whole record,
// buf[off-s.Headroom():off+n+s.Tailroom()]. It fails if the headroom or
// tailroom is missing, n exceeds MaxPlaintext, or the epoch's 2^48 sequence
// numbers are used up.
//
// With a connection ID the record is an RFC 9146 tls12_cid record: the
// header carries the CID before the length, the encrypted
// DTLSInnerPlaintext is the payload followed by ct (no padding), and the
// additional data is that of RFC 9146 section 5.
func (s *Sealer) Seal(buf []byte, off, n int, ct ContentType) ([]byte, error) {
	switch {
	case off < 0 || n < 0:
		return nil, errPayloadRange
	case n > MaxPlaintext:
		return nil, errPayloadLarge
	case off < s.headroom:
		return nil, errHeadroom
	case off > len(buf) || len(buf)-off < n+s.tailroom:
		return nil, errTailroom
	}
	seq := s.next.Add(1) - 1
	if seq > MaxSeq {
		// RFC 6347 section 4.1: never wrap; the association must end.
		return nil, ErrSeqExhausted
	}
	h := off - s.headroom
	// The 64-bit record number of RFC 6347 section 4.1.2.1 and RFC 9325
	// section 7.2.1: unique per key, which is all a nonce must be.
	es := uint64(s.epoch)<<48 | seq
	if s.cid != nil {
		return s.sealCID(buf, h, off, n, ct, seq, es), nil
	}
	if s.cbc != nil {
		return s.cbc.seal(buf, h, off, n, ct, s.epoch, seq), nil
	}
	payload := buf[off : off+n]
	if s.chacha {
		// RFC 7905 section 2: nonce = write_IV XOR (0^32 || epoch || seq),
		// nothing explicit in the record. 13 bytes of headroom cannot hold
		// both nonce and AAD, so they come from a pooled scratch.
		sc := scratchPool.Get().(*[32]byte)
		nonce, aad := sc[0:12], sc[12:25]
		copy(nonce, s.iv[:])
		binary.BigEndian.PutUint64(nonce[4:], binary.BigEndian.Uint64(nonce[4:])^es)
		putAAD(aad, ct, s.epoch, seq, n)
		s.aead.Seal(payload[:0], nonce, payload, aad)
		scratchPool.Put(sc)
		putHeader(buf[h:], ct, s.epoch, seq, n+tagLen)
		return buf[h : off+n+tagLen], nil
	}
	// GCM (RFC 5288 section 3): nonce = salt(4) || explicit(8), and the
	// explicit part is epoch||seq as pion sends it. The nonce's last 8
	// bytes are also the AAD's first 8, so both fit overlapped in the
	// 21 bytes of headroom: salt at h+4, epoch||seq at h+8, type, version
	// and length at h+16..h+21. Passing arrays on the stack to the
	// cipher.AEAD interface would move them to the heap on every call.
	stage := buf[h : h+HeaderLen+explicitLen]
	copy(stage[4:8], s.iv[:4])
	binary.BigEndian.PutUint64(stage[8:16], es)
	stage[16] = byte(ct)
	binary.BigEndian.PutUint16(stage[17:19], VersionDTLS12)
	binary.BigEndian.PutUint16(stage[19:21], uint16(n))
	s.aead.Seal(payload[:0], stage[4:16], payload, stage[8:21])
	// Now the real header and explicit nonce over the staging bytes.
	putHeader(stage, ct, s.epoch, seq, explicitLen+n+tagLen)
	binary.BigEndian.PutUint64(stage[HeaderLen:], es)
	return buf[h : off+n+tagLen], nil
}

// scratchPool holds nonce and AAD space for the paths that cannot stage
// them in the record's own bytes (ChaCha20-Poly1305, and GCM records whose
// explicit nonce is not epoch||seq).
var scratchPool = sync.Pool{New: func() any { return new([32]byte) }}

// sealCID writes a tls12_cid record (RFC 9146 section 4) around
// buf[off:off+n]: the DTLSInnerPlaintext content || real type (no zeros) is
// encrypted in place, under the same nonce as a plain record's (GCM: salt ||
// epoch||seq with epoch||seq also explicit in the record; ChaCha20: the
// RFC 7905 XOR), and with the additional data of RFC 9146 section 5, which
// is too long to stage in the headroom and comes from a pooled scratch.
func (s *Sealer) sealCID(buf []byte, h, off, n int, ct ContentType, seq, es uint64) []byte {
	inner := buf[off : off+n+1]
	inner[n] = byte(ct)
	sc := cidScratchPool.Get().(*cidScratch)
	nonce, aad := sc[0:12], sc[12:12+len(s.aad)]
	copy(aad, s.aad)
	putCIDAAD(aad, seq, n+1)
	copy(nonce, s.iv[:])
	explicit := 0
	if s.chacha {
		binary.BigEndian.PutUint64(nonce[4:], binary.BigEndian.Uint64(nonce[4:])^es)
	} else {
		binary.BigEndian.PutUint64(nonce[4:], es)
		explicit = explicitLen
		binary.BigEndian.PutUint64(buf[off-explicitLen:off], es)
	}
	s.aead.Seal(inner[:0], nonce, inner, aad)
	cidScratchPool.Put(sc)
	putCIDHeader(buf[h:], s.epoch, seq, s.cid, explicit+n+1+tagLen)
	return buf[h : off+n+1+tagLen]
}

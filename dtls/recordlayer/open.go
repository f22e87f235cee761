package recordlayer

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync"
)

// Opener verifies and decrypts incoming records. Open is safe for
// concurrent use: the replay window is locked only to check a sequence
// number and, after the tag verified, to record it.
type Opener struct {
	aead   cipher.AEAD
	iv     [12]byte // first 4 bytes for GCM
	epoch  uint16
	chacha bool
	body   int    // explicit nonce + tag: the smallest record body
	cid    []byte // Keys.RemoteCID; empty: plain records
	aad    []byte // cidAADTemplate(epoch, cid), if cid
	cbc    *cbcState

	mu  sync.Mutex
	win ReplayWindow
}

// NewOpener returns an Opener for k's remote direction with a replay window
// of at least window records (at least MinWindow; rounded up, see
// ReplayWindow). Sequence numbers below k.RemoteSeq count as seen: pion
// consumed those records during the handshake. If k.RemoteCID is not empty,
// only tls12_cid records that carry it are accepted (RFC 9146).
func NewOpener(k Keys, window int) (*Opener, error) {
	p, ok := k.Suite.params()
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrSuite, k.Suite)
	}
	if err := k.check(p, k.RemoteKey, k.RemoteIV, k.RemoteMACKey, k.RemoteCID); err != nil {
		return nil, err
	}
	o := &Opener{epoch: k.Epoch, chacha: p.chacha, body: k.Suite.explicit() + tagLen}
	if p.cbc {
		c, err := newCBC(k.RemoteKey, k.RemoteMACKey, k.Version, false)
		if err != nil {
			return nil, err
		}
		o.cbc = c
		o.win.init(window)
		o.win.Reset(k.RemoteSeq)
		return o, nil
	}
	a, err := newAEAD(p, k.RemoteKey)
	if err != nil {
		return nil, err
	}
	o.aead = a
	if len(k.RemoteCID) > 0 {
		o.cid = bytes.Clone(k.RemoteCID)
		o.aad = cidAADTemplate(k.Epoch, o.cid)
	}
	copy(o.iv[:], k.RemoteIV)
	o.win.init(window)
	o.win.Reset(k.RemoteSeq)
	return o, nil
}

// Window is the number of records the replay window remembers.
func (o *Opener) Window() int { return o.win.Size() }

// CID returns the connection ID the peer's records must carry
// (Keys.RemoteCID), nil if none. The caller must not modify it.
func (o *Opener) CID() []byte { return o.cid }

// Open verifies and decrypts rec, which must be exactly one record (header
// and body; split datagrams with NextRecord, or NextRecordCID when
// connection IDs are in use), in place. It returns the record's content
// type and the plaintext, which aliases rec. The header bytes are left as
// they arrived; on ErrAuth the body is garbage (Go's AEADs clear their
// output when the tag does not verify). Before the tag is checked, nothing
// in rec is changed, so a record refused with ErrEpoch, ErrVersion or
// ErrCID can still be handed on (to pion, say).
//
// With a connection ID (Keys.RemoteCID) only tls12_cid records carrying it
// are accepted (others of the data epoch are refused with ErrCID, as pion
// refuses them); the content type returned is the real one from the
// decrypted DTLSInnerPlaintext, whose zero padding is stripped. Without
// one, a tls12_cid record is refused with ErrCID.
//
// Errors, all from the sentinels: ErrTruncated (shorter than header plus
// nonce plus tag, or the length field disagrees with len(rec), or an inner
// plaintext without a content type), ErrVersion, ErrEpoch, ErrCID,
// ErrTooLarge, ErrReplay (already accepted, or older than the window),
// ErrAuth.
func (o *Opener) Open(rec []byte) (ContentType, []byte, error) {
	if len(rec) < HeaderLen {
		return 0, nil, errShortHeader
	}
	if o.cbc != nil {
		return o.openCBC(rec)
	}
	if ContentType(rec[0]) == ConnectionID {
		return o.openCID(rec)
	}
	length := int(binary.BigEndian.Uint16(rec[11:13]))
	switch {
	case length != len(rec)-HeaderLen:
		return 0, nil, errLengthField
	case binary.BigEndian.Uint16(rec[1:3]) != VersionDTLS12:
		return 0, nil, errVersion
	case binary.BigEndian.Uint16(rec[3:5]) != o.epoch:
		return 0, nil, errEpoch
	case o.cid != nil:
		// RFC 9146 section 3: once negotiated, the CID is in every
		// protected record.
		return 0, nil, errCIDMissing
	case length < o.body:
		return 0, nil, errShortBody
	case length > maxCiphertext || length-o.body > MaxPlaintext:
		// RFC 5246 section 6.2.3: a record_overflow, not worth decrypting.
		return 0, nil, errRecordLarge
	}
	ct := ContentType(rec[0])
	seq := uint48(rec[5:11])
	// RFC 6347 section 4.1.2.6: duplicates are discarded before the MAC is
	// checked, which also spares the AEAD work for them.
	if err := o.check(seq); err != nil {
		return 0, nil, err
	}

	es := uint64(o.epoch)<<48 | seq
	n := length - o.body // plaintext length
	var plain []byte
	var err error
	if o.chacha {
		plain, err = o.openChaCha(rec, ct, seq, es, n)
	} else {
		plain, err = o.openGCM(rec, ct, seq, es, n)
	}
	if err != nil {
		return 0, nil, err
	}
	if err := o.accept(seq); err != nil {
		return 0, nil, err
	}
	return ct, plain, nil
}

// check tells whether seq is new to the replay window.
func (o *Opener) check(seq uint64) error {
	o.mu.Lock()
	err := o.win.check(seq)
	o.mu.Unlock()
	return err
}

// accept records seq in the replay window after its record verified.
// It checks again: a concurrent Open may have accepted the same number
// while this one decrypted.
func (o *Opener) accept(seq uint64) error {
	o.mu.Lock()
	err := o.win.check(seq)
	if err == nil {
		o.win.Accept(seq)
	}
	o.mu.Unlock()
	return err
}

// openCID opens a tls12_cid record (RFC 9146 section 4): type(1)
// version(2) epoch(2) seq(6) cid length(2), then the body as in a plain
// record (GCM explicit nonce, ciphertext, tag) whose plaintext is the
// DTLSInnerPlaintext content || real type || zeros. Nonce as for a plain
// record, additional data of RFC 9146 section 5.
func (o *Opener) openCID(rec []byte) (ContentType, []byte, error) {
	if o.cid == nil {
		return 0, nil, errCIDUnexpected
	}
	hl := HeaderLen + len(o.cid)
	if len(rec) < hl {
		return 0, nil, errShortCIDHeader
	}
	length := int(binary.BigEndian.Uint16(rec[hl-2 : hl]))
	switch {
	case length != len(rec)-hl:
		return 0, nil, errLengthField
	case binary.BigEndian.Uint16(rec[1:3]) != VersionDTLS12:
		return 0, nil, errVersion
	case !bytes.Equal(rec[11:hl-2], o.cid):
		return 0, nil, errCIDMismatch
	case binary.BigEndian.Uint16(rec[3:5]) != o.epoch:
		return 0, nil, errEpoch
	case length < o.body+1:
		// At least the real content type inside.
		return 0, nil, errShortBody
	case length > maxCiphertext:
		return 0, nil, errRecordLarge
	}
	seq := uint48(rec[5:11])
	if err := o.check(seq); err != nil {
		return 0, nil, err
	}

	es := uint64(o.epoch)<<48 | seq
	innerLen := length - o.body
	sc := cidScratchPool.Get().(*cidScratch)
	nonce, aad := sc[0:12], sc[12:12+len(o.aad)]
	copy(aad, o.aad)
	putCIDAAD(aad, seq, innerLen)
	body := rec[hl:]
	if o.chacha {
		copy(nonce, o.iv[:])
		binary.BigEndian.PutUint64(nonce[4:], binary.BigEndian.Uint64(nonce[4:])^es)
	} else {
		// The explicit nonce as sent, whatever the peer chose (pion:
		// epoch||seq).
		copy(nonce[:4], o.iv[:4])
		copy(nonce[4:], body[:explicitLen])
		body = body[explicitLen:]
	}
	inner, err := o.aead.Open(body[:0], nonce, body, aad)
	cidScratchPool.Put(sc)
	if err != nil {
		return 0, nil, errAuth
	}
	// The real type is the last non-zero byte (RFC 9146 section 4, as in
	// TLS 1.3's TLSInnerPlaintext); what follows is padding.
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, errNoInnerType
	}
	if i > MaxPlaintext {
		return 0, nil, errRecordLarge
	}
	if err := o.accept(seq); err != nil {
		return 0, nil, err
	}
	return ContentType(inner[i]), inner[:i], nil
}

func (o *Opener) openGCM(rec []byte, ct ContentType, seq, es uint64, n int) ([]byte, error) {
	body := rec[HeaderLen+explicitLen:]
	if binary.BigEndian.Uint64(rec[HeaderLen:HeaderLen+explicitLen]) != es {
		// A peer that does not use epoch||seq as its explicit nonce (RFC
		// 5288 lets it choose): nonce and AAD go to scratch space.
		sc := scratchPool.Get().(*[32]byte)
		nonce, aad := sc[0:12], sc[12:25]
		copy(nonce[:4], o.iv[:4])
		copy(nonce[4:], rec[HeaderLen:HeaderLen+explicitLen])
		putAAD(aad, ct, o.epoch, seq, n)
		plain, err := o.aead.Open(body[:0], nonce, body, aad)
		scratchPool.Put(sc)
		if err != nil {
			return nil, errAuth
		}
		return plain, nil
	}
	// The usual case, as in Seal: nonce (salt || epoch||seq) and AAD
	// (epoch||seq || type version length) overlap in the 21 bytes of header
	// and explicit nonce, which are put back afterwards.
	stage := rec[:HeaderLen+explicitLen]
	copy(stage[4:8], o.iv[:4])
	binary.BigEndian.PutUint64(stage[8:16], es)
	stage[16] = byte(ct)
	binary.BigEndian.PutUint16(stage[17:19], VersionDTLS12)
	binary.BigEndian.PutUint16(stage[19:21], uint16(n))
	plain, err := o.aead.Open(body[:0], stage[4:16], body, stage[8:21])
	putHeader(stage, ct, o.epoch, seq, explicitLen+n+tagLen)
	binary.BigEndian.PutUint64(stage[HeaderLen:], es)
	if err != nil {
		return nil, errAuth
	}
	return plain, nil
}

func (o *Opener) openChaCha(rec []byte, ct ContentType, seq, es uint64, n int) ([]byte, error) {
	// RFC 7905 section 2: nonce = write_IV XOR (0^32 || epoch || seq).
	body := rec[HeaderLen:]
	sc := scratchPool.Get().(*[32]byte)
	nonce, aad := sc[0:12], sc[12:25]
	copy(nonce, o.iv[:])
	binary.BigEndian.PutUint64(nonce[4:], binary.BigEndian.Uint64(nonce[4:])^es)
	putAAD(aad, ct, o.epoch, seq, n)
	plain, err := o.aead.Open(body[:0], nonce, body, aad)
	scratchPool.Put(sc)
	if err != nil {
		return nil, errAuth
	}
	return plain, nil
}

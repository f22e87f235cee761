package record

import (
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
	body   int // explicit nonce + tag: the smallest record body

	mu  sync.Mutex
	win ReplayWindow
}

// NewOpener returns an Opener for k's remote direction with a replay window
// of at least window records (at least MinWindow; rounded up, see
// ReplayWindow). Sequence numbers below k.RemoteSeq count as seen: pion
// consumed those records during the handshake.
func NewOpener(k Keys, window int) (*Opener, error) {
	p, ok := k.Suite.params()
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrSuite, k.Suite)
	}
	if err := k.check(p, k.RemoteKey, k.RemoteIV); err != nil {
		return nil, err
	}
	a, err := newAEAD(p, k.RemoteKey)
	if err != nil {
		return nil, err
	}
	o := &Opener{aead: a, epoch: k.Epoch, chacha: p.chacha, body: k.Suite.explicit() + tagLen}
	copy(o.iv[:], k.RemoteIV)
	o.win.init(window)
	o.win.Reset(k.RemoteSeq)
	return o, nil
}

// Window is the number of records the replay window remembers.
func (o *Opener) Window() int { return o.win.Size() }

// Open verifies and decrypts rec, which must be exactly one record (header
// and body; split datagrams with NextRecord), in place. It returns the
// record's content type and the plaintext, which aliases rec. The header
// bytes are left as they arrived; on ErrAuth the body is garbage (Go's AEADs
// clear their output when the tag does not verify). Before the tag is
// checked, nothing in rec is changed, so a record refused with ErrEpoch or
// ErrVersion can still be handed on (to pion, say).
//
// Errors, all from the sentinels: ErrTruncated (shorter than header plus
// nonce plus tag, or the length field disagrees with len(rec)), ErrVersion,
// ErrEpoch, ErrTooLarge, ErrReplay (already accepted, or older than the
// window), ErrAuth.
func (o *Opener) Open(rec []byte) (ContentType, []byte, error) {
	if len(rec) < HeaderLen {
		return 0, nil, errShortHeader
	}
	length := int(binary.BigEndian.Uint16(rec[11:13]))
	switch {
	case length != len(rec)-HeaderLen:
		return 0, nil, errLengthField
	case binary.BigEndian.Uint16(rec[1:3]) != VersionDTLS12:
		return 0, nil, errVersion
	case binary.BigEndian.Uint16(rec[3:5]) != o.epoch:
		return 0, nil, errEpoch
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
	o.mu.Lock()
	err := o.win.check(seq)
	o.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}

	es := uint64(o.epoch)<<48 | seq
	n := length - o.body // plaintext length
	var plain []byte
	if o.chacha {
		plain, err = o.openChaCha(rec, ct, seq, es, n)
	} else {
		plain, err = o.openGCM(rec, ct, seq, es, n)
	}
	if err != nil {
		return 0, nil, err
	}

	// Check again: a concurrent Open may have accepted the same number
	// while this one decrypted.
	o.mu.Lock()
	err = o.win.check(seq)
	if err == nil {
		o.win.Accept(seq)
	}
	o.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	return ct, plain, nil
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

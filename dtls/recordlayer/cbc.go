package recordlayer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
)

// CBC records, as the legacy AnyConnect DTLS uses them: Cisco's DTLS 0.9
// (record version 0x0100) with AES-CBC and HMAC-SHA1. The format is that of
// TLS 1.1 (RFC 4346 section 6.2.3.2), which DTLS 1.0 adopted (RFC 4347
// section 4.1.2.1) and DTLS 0.9 already had:
//
//	header(13) | IV(16) | AES-CBC(IV, payload | MAC(20) | padding | padding_length)
//
// MAC-then-encrypt: MAC = HMAC-SHA1(mac_key, epoch||seq(8) | type | version |
// length(2) | payload), with the payload's length (RFC 5246 section 6.2.3.1,
// DTLS's epoch||seq for seq_num per RFC 6347 section 4.1.2.1). Each padding
// byte, and padding_length, holds the number of padding bytes; we send the
// least that fills the block. GCM (seal.go, open.go) stays the fast path:
// this one costs a MAC and two passes.

const (
	cbcIVLen = aes.BlockSize // explicit IV per record
	macLen   = sha1.Size     // HMAC-SHA1
	// CBCTailroom is what Seal writes behind a CBC record's payload at
	// most: the MAC and a block of padding.
	CBCTailroom = macLen + aes.BlockSize
	// minCBCBody is the smallest CBC record body: IV, then the MAC and
	// the padding length rounded up to whole blocks.
	minCBCBody = cbcIVLen + (macLen+1+aes.BlockSize-1)/aes.BlockSize*aes.BlockSize

	// VersionDTLS10 is the record version of DTLS 1.0 (RFC 4347 section
	// 4.1: {254, 255}).
	VersionDTLS10 = 0xfeff
	// VersionDTLS09 is the record version of Cisco's pre-RFC DTLS, as
	// OpenSSL 0.9.8 (DTLS1_BAD_VER) and GnuTLS (GNUTLS_DTLS0_9) send it.
	VersionDTLS09 = 0x0100
)

var (
	errCBCVersion = wrap(ErrVersion, "version is not the channel's")
	errCBCBlocks  = wrap(ErrTruncated, "CBC body shorter than IV, MAC and padding, or not whole blocks")
	// One error for a bad MAC and bad padding: telling them apart would be
	// a padding oracle.
	errCBCAuth = wrap(ErrAuth, "bad MAC or padding")
)

// cbcState is one direction's CBC cipher and MAC key. The block cipher is
// stateless; the CBC mode and the HMAC carry state, so each Seal or Open
// takes a scratch of its own from the pool (nothing allocates once the pool
// is warm).
type cbcState struct {
	block   cipher.Block
	version uint16
	pool    sync.Pool // *cbcScratch
}

type cbcScratch struct {
	mac  hash.Hash
	mode cipher.BlockMode // implements ivSetter
	pre  [13]byte         // MAC preamble
	sum  [macLen]byte
}

// ivSetter is what crypto/cipher's CBC modes implement (crypto/tls uses it
// too): the mode is reused with each record's IV.
type ivSetter interface{ SetIV([]byte) }

func newCBC(key, macKey []byte, version uint16, encrypt bool) (*cbcState, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		version = VersionDTLS12
	}
	c := &cbcState{block: block, version: version}
	mk := append([]byte(nil), macKey...)
	var zero [cbcIVLen]byte
	c.pool.New = func() any {
		sc := &cbcScratch{mac: hmac.New(sha1.New, mk)}
		if encrypt {
			sc.mode = cipher.NewCBCEncrypter(block, zero[:])
		} else {
			sc.mode = cipher.NewCBCDecrypter(block, zero[:])
		}
		return sc
	}
	if _, ok := c.pool.Get().(*cbcScratch).mode.(ivSetter); !ok {
		return nil, errors.New("record: CBC mode cannot reset its IV")
	}
	return c, nil
}

// putMACPreamble writes what the MAC covers before the payload (RFC 5246
// section 6.2.3.1): epoch||seq, type, version, payload length.
func putMACPreamble(b []byte, ct ContentType, version, epoch uint16, seq uint64, n int) {
	_ = b[12]
	binary.BigEndian.PutUint16(b[0:2], epoch)
	putUint48(b[2:8], seq)
	b[8] = byte(ct)
	binary.BigEndian.PutUint16(b[9:11], version)
	binary.BigEndian.PutUint16(b[11:13], uint16(n))
}

// seal protects buf[off:off+n] in place: header and IV go to
// buf[h:off] (h = off-29), MAC and padding behind the payload (at most
// CBCTailroom bytes). The caller checked the room and took seq.
func (c *cbcState) seal(buf []byte, h, off, n int, ct ContentType, epoch uint16, seq uint64) []byte {
	sc := c.pool.Get().(*cbcScratch)
	putMACPreamble(sc.pre[:], ct, c.version, epoch, seq, n)
	sc.mac.Reset()
	sc.mac.Write(sc.pre[:])
	sc.mac.Write(buf[off : off+n])
	sc.mac.Sum(buf[off+n : off+n]) // the MAC lands behind the payload
	padded := n + macLen
	pad := aes.BlockSize - padded%aes.BlockSize // 1..16 bytes, the length byte included
	for i := range pad {
		buf[off+padded+i] = byte(pad - 1)
	}
	total := padded + pad
	// The IV must be unpredictable (RFC 4346 section 6.2.3.2): the block
	// cipher, under the record key, applied to a nonce, here epoch||seq,
	// which never repeats under one key (NIST SP 800-38A appendix C). No
	// random read per packet.
	iv := buf[off-cbcIVLen : off]
	binary.BigEndian.PutUint64(iv[0:8], uint64(epoch)<<48|seq)
	clear(iv[8:])
	c.block.Encrypt(iv, iv)
	sc.mode.(ivSetter).SetIV(iv)
	sc.mode.CryptBlocks(buf[off:off+total], buf[off:off+total])
	c.pool.Put(sc)
	b := buf[h:]
	b[0] = byte(ct)
	binary.BigEndian.PutUint16(b[1:3], c.version)
	binary.BigEndian.PutUint16(b[3:5], epoch)
	putUint48(b[5:11], seq)
	binary.BigEndian.PutUint16(b[11:13], uint16(cbcIVLen+total))
	return buf[h : off+total]
}

// openCBC verifies and decrypts a CBC record in place (see Open). The
// padding and the MAC are checked without branching on secret data: the
// padding in constant time, the MAC over the payload and then the rest of
// the padded block fed to the HMAC too, so that the work hardly depends on
// the padding length (the Lucky Thirteen mitigation of crypto/tls; RFC
// 7457 section 2.8), and both failures give one error.
func (o *Opener) openCBC(rec []byte) (ContentType, []byte, error) {
	c := o.cbc
	if len(rec) < HeaderLen {
		return 0, nil, errShortHeader
	}
	length := int(binary.BigEndian.Uint16(rec[11:13]))
	switch {
	case length != len(rec)-HeaderLen:
		return 0, nil, errLengthField
	case binary.BigEndian.Uint16(rec[1:3]) != c.version:
		return 0, nil, errCBCVersion
	case binary.BigEndian.Uint16(rec[3:5]) != o.epoch:
		return 0, nil, errEpoch
	case length < minCBCBody || (length-cbcIVLen)%aes.BlockSize != 0:
		return 0, nil, errCBCBlocks
	case length > maxCiphertext:
		return 0, nil, errRecordLarge
	}
	ct := ContentType(rec[0])
	seq := uint48(rec[5:11])
	if err := o.check(seq); err != nil {
		return 0, nil, err
	}
	body := rec[HeaderLen+cbcIVLen:]
	sc := c.pool.Get().(*cbcScratch)
	sc.mode.(ivSetter).SetIV(rec[HeaderLen : HeaderLen+cbcIVLen])
	sc.mode.CryptBlocks(body, body)
	padLen, good := cbcPadding(body)
	n := len(body) - padLen - macLen // >= 0: cbcPadding saw to it
	putMACPreamble(sc.pre[:], ct, c.version, o.epoch, seq, n)
	sc.mac.Reset()
	sc.mac.Write(sc.pre[:])
	sc.mac.Write(body[:n])
	sum := sc.mac.Sum(sc.sum[:0])
	sc.mac.Write(body[n+macLen:]) // equalizes the hashing work (see above)
	good &= subtle.ConstantTimeCompare(sum, body[n:n+macLen])
	c.pool.Put(sc)
	if good != 1 {
		return 0, nil, errCBCAuth
	}
	if err := o.accept(seq); err != nil {
		return 0, nil, err
	}
	return ct, body[:n], nil
}

// cbcPadding reads the padding of a decrypted CBC body (RFC 5246 section
// 6.2.3.2: padding_length+1 bytes, each equal to padding_length). It
// returns the bytes to strip (padding and length byte) and 1 if the padding
// is well formed and leaves room for the MAC, else 0 bytes and 0. It looks
// at the last min(256, len(b)) bytes whatever the padding length, and
// branches only on len(b), which is public. len(b) must be at least
// macLen+1.
func cbcPadding(b []byte) (int, int) {
	last := int(b[len(b)-1])
	good := subtle.ConstantTimeLessOrEq(last+1+macLen, len(b))
	for i := 1; i <= min(256, len(b)); i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, last+1)
		same := subtle.ConstantTimeByteEq(b[len(b)-i], uint8(last))
		good &= same | (inPad ^ 1)
	}
	return subtle.ConstantTimeSelect(good, last+1, 0), good
}

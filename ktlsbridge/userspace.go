package ktlsbridge

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"kvpn/record"

	"golang.org/x/crypto/chacha20poly1305"
)

// The userspace record layer: what a direction falls back to when the
// kernel cannot take it, and what tests use to speak to a crypto/tls peer
// with the same keys the kernel would get. Records are protected in place,
// with the header written into headroom in front of the payload and the tag
// into tailroom behind it, so the data path neither copies nor allocates.

const (
	// RecordHeaderLen is the length of a TLS record header: type,
	// legacy_record_version, length.
	RecordHeaderLen = 5
	// MaxPlaintext is the largest payload of one record (2^14).
	MaxPlaintext = 16384
	// maxRecordBody is the largest record body accepted: RFC 8446
	// section 5.2 (2^14 + 256). RFC 5246 section 6.2.3 allows 2^14 + 2048,
	// but an AEAD record of TLS 1.2 adds at most 24 bytes to its plaintext.
	maxRecordBody = MaxPlaintext + 256
)

// Record content types (RFC 8446 section 5.1, RFC 5246 section 6.2.1).
const (
	contentChangeCipherSpec = 20
	contentAlert            = 21
	contentHandshake        = 22
	contentApplicationData  = 23
)

// recordVersion is legacy_record_version after the handshake, in both TLS
// 1.2 and TLS 1.3.
const recordVersion = 0x0303

// Alert descriptions (RFC 8446 section 6.2) that the record errors call
// for; recordAlert maps an error to one.
const (
	alertDescUnexpectedMessage = 10
	alertDescBadRecordMAC      = 20
	alertDescRecordOverflow    = 22
	alertDescDecodeError       = 50
	alertDescInternalError     = 80
)

// recordError is an error of the record layer, with the alert a peer should
// be sent before the connection is closed.
type recordError struct {
	alert uint8
	msg   string
}

func (e *recordError) Error() string { return e.msg }

// ErrBadRecordMAC is returned by Open for a record that fails
// authentication: wrong key, wrong sequence number, or modified in transit.
var ErrBadRecordMAC error = &recordError{alertDescBadRecordMAC, "ktlsbridge: bad record MAC"}

var (
	errRecordOverflow  = &recordError{alertDescRecordOverflow, "ktlsbridge: record too large"}
	errBadRecordType   = &recordError{alertDescUnexpectedMessage, "ktlsbridge: unexpected record content type"}
	errBadVersion      = &recordError{alertDescDecodeError, "ktlsbridge: record version is not 0x0303"}
	errRecordLength    = &recordError{alertDescDecodeError, "ktlsbridge: record length does not match its header"}
	errEmptyRecord     = &recordError{alertDescUnexpectedMessage, "ktlsbridge: empty alert or handshake record"}
	errNoInnerType     = &recordError{alertDescUnexpectedMessage, "ktlsbridge: TLS 1.3 record without a content type"}
	errSeqExhausted    = &recordError{alertDescInternalError, "ktlsbridge: record sequence number exhausted"}
	errPlaintextTooBig = errors.New("ktlsbridge: payload larger than a record")
)

// recordAlert returns the alert description to send for an error from
// Open or RecordLen (internal_error for anything else).
func recordAlert(err error) uint8 {
	var re *recordError
	if errors.As(err, &re) {
		return re.alert
	}
	return alertDescInternalError
}

// RecordLen returns the total length (header and body) of the record that
// starts at b, 0 if fewer than RecordHeaderLen bytes are present, or an
// error for a header no record after the handshake can have: an unknown
// content type, a version other than 0x0303, or a body longer than 2^14 +
// 256 bytes.
func RecordLen(b []byte) (int, error) {
	if len(b) < RecordHeaderLen {
		return 0, nil
	}
	if b[0] < contentChangeCipherSpec || b[0] > contentApplicationData {
		return 0, errBadRecordType
	}
	if binary.BigEndian.Uint16(b[1:3]) != recordVersion {
		return 0, errBadVersion
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if n > maxRecordBody {
		return 0, errRecordOverflow
	}
	return RecordHeaderLen + n, nil
}

// recordAEAD is the state shared by Sealer and Opener: one direction's AEAD,
// its IV and its sequence number, with scratch space for nonce and
// additional data so that nothing allocates per record.
type recordAEAD struct {
	aead     cipher.AEAD
	tls13    bool
	explicit bool     // TLS 1.2 AES-GCM: 8-byte explicit nonce in each record
	iv       [12]byte // TLS 1.2 AES-GCM: salt in iv[0:4]
	seq      uint64
	nonce    [12]byte
	aad      [13]byte
}

func (r *recordAEAD) init(k Keys) error {
	if err := k.check(); err != nil {
		return err
	}
	var err error
	switch k.Cipher {
	case CipherAES128GCM, CipherAES256GCM:
		var b cipher.Block
		if b, err = aes.NewCipher(k.Key); err == nil {
			r.aead, err = cipher.NewGCM(b)
		}
	case CipherChaCha20Poly1305:
		r.aead, err = chacha20poly1305.New(k.Key)
	}
	if err != nil {
		return fmt.Errorf("ktlsbridge: %v: %w", k.Cipher, err)
	}
	r.tls13 = k.Version == tls.VersionTLS13
	r.explicit = k.explicitNonce()
	copy(r.iv[:], k.IV)
	r.seq = k.Seq
	return nil
}

// seqNonce sets r.nonce to the IV XORed with the sequence number, left-padded
// to 12 bytes (RFC 8446 section 5.3, RFC 7905 section 2).
func (r *recordAEAD) seqNonce() []byte {
	r.nonce = r.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], r.seq)
	for i := range s {
		r.nonce[4+i] ^= s[i]
	}
	return r.nonce[:]
}

// explicitNonce sets r.nonce to the salt followed by the 8 bytes of
// explicit nonce (RFC 5288 section 3).
func (r *recordAEAD) explicitNonce(explicit []byte) []byte {
	copy(r.nonce[:4], r.iv[:4])
	copy(r.nonce[4:], explicit)
	return r.nonce[:]
}

// aad12 fills in the TLS 1.2 additional data: seq_num, type, version and
// the plaintext length (RFC 5246 section 6.2.3.3).
func (r *recordAEAD) aad12(typ uint8, n int) []byte {
	binary.BigEndian.PutUint64(r.aad[:8], r.seq)
	r.aad[8] = typ
	binary.BigEndian.PutUint16(r.aad[9:11], recordVersion)
	binary.BigEndian.PutUint16(r.aad[11:13], uint16(n))
	return r.aad[:]
}

// Sealer protects the records of one direction. It is not safe for
// concurrent use.
type Sealer struct {
	r recordAEAD
}

// NewSealer returns a Sealer whose first record has sequence number k.Seq.
func NewSealer(k Keys) (*Sealer, error) {
	s := new(Sealer)
	if err := s.r.init(k); err != nil {
		return nil, err
	}
	return s, nil
}

// Headroom is the number of bytes Seal writes in front of the payload: the
// record header, and for TLS 1.2 AES-GCM the 8-byte explicit nonce.
func (s *Sealer) Headroom() int {
	if s.r.explicit {
		return RecordHeaderLen + 8
	}
	return RecordHeaderLen
}

// Tailroom is the number of bytes Seal writes behind the payload: the
// 16-byte tag, and for TLS 1.3 the inner content type before it.
func (s *Sealer) Tailroom() int {
	if s.r.tls13 {
		return 1 + 16
	}
	return 16
}

// Seal protects buf[off:off+n] in place as one record of content type typ
// (23 application data, 21 alert, 22 handshake). The header (and explicit
// nonce) go into buf[off-Headroom():off], the inner content type (TLS 1.3)
// and the tag after the payload, so len(buf) must be at least
// off+n+Tailroom(). Seal returns the whole record, a subslice of buf.
//
// Seal fails when n > MaxPlaintext, when the buffer has too little room,
// for another content type, and when the sequence number would wrap (the
// last number, 2^64-1, is never used). Not safe for concurrent use.
func (s *Sealer) Seal(buf []byte, off, n int, ct record.ContentType) ([]byte, error) {
	r := &s.r
	typ := uint8(ct)
	head, tail := s.Headroom(), s.Tailroom()
	switch {
	case n < 0 || n > MaxPlaintext:
		return nil, errPlaintextTooBig
	case off < head || off > len(buf) || len(buf)-off < n+tail:
		return nil, fmt.Errorf("ktlsbridge: Seal needs %d bytes before and %d after the payload", head, tail)
	case typ < contentAlert || typ > contentApplicationData:
		return nil, errBadRecordType
	case r.seq == math.MaxUint64:
		return nil, errSeqExhausted
	}
	var rec []byte
	switch {
	case r.tls13:
		buf[off+n] = typ
		ct := n + 1 + r.aead.Overhead()
		hdr := buf[off-RecordHeaderLen : off]
		hdr[0] = contentApplicationData
		binary.BigEndian.PutUint16(hdr[1:3], recordVersion)
		binary.BigEndian.PutUint16(hdr[3:5], uint16(ct))
		r.aead.Seal(buf[off:off], r.seqNonce(), buf[off:off+n+1], hdr)
		rec = buf[off-RecordHeaderLen : off+ct]
	case r.explicit:
		start := off - RecordHeaderLen - 8
		hdr := buf[start : start+RecordHeaderLen]
		hdr[0] = typ
		binary.BigEndian.PutUint16(hdr[1:3], recordVersion)
		binary.BigEndian.PutUint16(hdr[3:5], uint16(8+n+r.aead.Overhead()))
		explicit := buf[off-8 : off]
		binary.BigEndian.PutUint64(explicit, r.seq)
		r.aead.Seal(buf[off:off], r.explicitNonce(explicit), buf[off:off+n], r.aad12(typ, n))
		rec = buf[start : off+n+r.aead.Overhead()]
	default:
		hdr := buf[off-RecordHeaderLen : off]
		hdr[0] = typ
		binary.BigEndian.PutUint16(hdr[1:3], recordVersion)
		binary.BigEndian.PutUint16(hdr[3:5], uint16(n+r.aead.Overhead()))
		r.aead.Seal(buf[off:off], r.seqNonce(), buf[off:off+n], r.aad12(typ, n))
		rec = buf[off-RecordHeaderLen : off+n+r.aead.Overhead()]
	}
	r.seq++
	return rec, nil
}

// Opener authenticates and decrypts the records of one direction. It is
// not safe for concurrent use.
type Opener struct {
	r recordAEAD
}

// NewOpener returns an Opener that expects the first record to have
// sequence number k.Seq.
func NewOpener(k Keys) (*Opener, error) {
	o := new(Opener)
	if err := o.r.init(k); err != nil {
		return nil, err
	}
	return o, nil
}

// Open authenticates and decrypts one complete record (header included) in
// place. It returns the record's content type (for TLS 1.3 the inner type,
// after the zero padding is stripped) and the plaintext, which aliases rec.
//
// Errors: ErrBadRecordMAC when authentication fails; an error for a
// malformed header (version other than 0x0303, length not that of rec), for
// a TLS 1.3 record whose outer type is not application data, for a body
// longer than 2^14 + 256 or a plaintext longer than 2^14, and for an empty
// alert or handshake record. Any error is fatal to the connection: the
// sequence number does not advance, and rec may have been overwritten.
func (o *Opener) Open(rec []byte) (ct record.ContentType, pt []byte, err error) {
	typ, pt, err := o.open(rec)
	return record.ContentType(typ), pt, err
}

func (o *Opener) open(rec []byte) (typ uint8, pt []byte, err error) {
	r := &o.r
	if len(rec) < RecordHeaderLen {
		return 0, nil, errRecordLength
	}
	typ = rec[0]
	if binary.BigEndian.Uint16(rec[1:3]) != recordVersion {
		return 0, nil, errBadVersion
	}
	n := int(binary.BigEndian.Uint16(rec[3:5]))
	if n != len(rec)-RecordHeaderLen {
		return 0, nil, errRecordLength
	}
	if n > maxRecordBody {
		return 0, nil, errRecordOverflow
	}
	if r.seq == math.MaxUint64 {
		return 0, nil, errSeqExhausted
	}
	body := rec[RecordHeaderLen:]
	tag := r.aead.Overhead()
	switch {
	case r.tls13:
		if typ != contentApplicationData {
			return 0, nil, errBadRecordType
		}
		if n < 1+tag {
			return 0, nil, ErrBadRecordMAC
		}
		pt, err = r.aead.Open(body[:0], r.seqNonce(), body, rec[:RecordHeaderLen])
		if err != nil {
			return 0, nil, ErrBadRecordMAC
		}
		i := len(pt) - 1
		for i >= 0 && pt[i] == 0 {
			i--
		}
		if i < 0 {
			return 0, nil, errNoInnerType
		}
		typ, pt = pt[i], pt[:i]
		if typ < contentAlert || typ > contentApplicationData {
			return 0, nil, errBadRecordType
		}
	case r.explicit:
		if typ < contentAlert || typ > contentApplicationData {
			return 0, nil, errBadRecordType
		}
		if n < 8+tag {
			return 0, nil, ErrBadRecordMAC
		}
		ct := body[8:]
		pt, err = r.aead.Open(ct[:0], r.explicitNonce(body[:8]), ct, r.aad12(typ, len(ct)-tag))
		if err != nil {
			return 0, nil, ErrBadRecordMAC
		}
	default:
		if typ < contentAlert || typ > contentApplicationData {
			return 0, nil, errBadRecordType
		}
		if n < tag {
			return 0, nil, ErrBadRecordMAC
		}
		pt, err = r.aead.Open(body[:0], r.seqNonce(), body, r.aad12(typ, n-tag))
		if err != nil {
			return 0, nil, ErrBadRecordMAC
		}
	}
	if len(pt) > MaxPlaintext {
		return 0, nil, errRecordOverflow
	}
	if len(pt) == 0 && typ != contentApplicationData {
		return 0, nil, errEmptyRecord
	}
	r.seq++
	return typ, pt, nil
}

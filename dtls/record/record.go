// Package record is kvpn's DTLS 1.2 record protection for the data channel:
// AEAD seal and open in place, sequence numbers, and a replay window
// (RFC 6347 section 4.1.2.6, bitmap as in RFC 6479).
//
// github.com/pion/dtls/v3 does the handshake; KeysFromPion turns its
// exported state into Keys, and from then on Sealer and Opener protect the
// data records. They work in the caller's buffers: Seal writes the header and
// explicit nonce into headroom in front of the payload and the tag into
// tailroom behind it, Open decrypts the body where it lies. Neither allocates.
//
// Connection IDs (RFC 9146) are not supported: kvpn does not offer them in
// the handshake, and KeysFromPion refuses a state that negotiated them.
package record

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// HeaderLen is the size of a DTLS 1.2 record header (RFC 6347 section
// 4.1): type(1), version(2), epoch(2), sequence_number(6), length(2).
const HeaderLen = 13

// ContentType is the first byte of a record (RFC 5246 section 6.2.1).
type ContentType uint8

// Content types of DTLS 1.2 records.
const (
	ChangeCipherSpec ContentType = 20
	Alert            ContentType = 21
	Handshake        ContentType = 22
	ApplicationData  ContentType = 23
)

func (t ContentType) String() string {
	switch t {
	case ChangeCipherSpec:
		return "change_cipher_spec"
	case Alert:
		return "alert"
	case Handshake:
		return "handshake"
	case ApplicationData:
		return "application_data"
	}
	return "content_type(" + strconv.Itoa(int(t)) + ")"
}

// VersionDTLS12 is the record version of DTLS 1.2 (RFC 6347 section 4.1:
// the one's complement of 1.2, {254, 253}).
const VersionDTLS12 = 0xfefd

// MaxSeq is the largest record sequence number: it is 48 bits wide on the
// wire (RFC 6347 section 4.1), and must not wrap within an epoch.
const MaxSeq = 1<<48 - 1

// MaxPlaintext is the largest payload of one record (RFC 5246 section 6.2.1:
// 2^14 bytes).
const MaxPlaintext = 1 << 14

// maxCiphertext bounds a protected record's length field (RFC 5246 section
// 6.2.3: 2^14 + 2048).
const maxCiphertext = MaxPlaintext + 2048

// Tailroom is the number of bytes Seal needs after the payload: the AEAD tag
// (16 bytes for both AES-GCM and ChaCha20-Poly1305).
const Tailroom = 16

const (
	tagLen      = 16
	explicitLen = 8 // GCM explicit nonce, RFC 5288 section 3
)

// Errors returned by Open, NextRecord and ParseHeader. They are wrapped
// with a fixed detail text (test with errors.Is); the detail never carries
// per-packet values, so that rejecting a packet allocates nothing either.
var (
	// ErrTruncated: the input is shorter than a header or than the
	// smallest protected record, or the length field disagrees with it.
	ErrTruncated = errors.New("record: truncated")
	// ErrVersion: the record version is not DTLS 1.2.
	ErrVersion = errors.New("record: not a DTLS 1.2 record")
	// ErrEpoch: the record's epoch is not the data channel's. Records of
	// epoch 0 are handshake retransmissions for pion, not for Open.
	ErrEpoch = errors.New("record: wrong epoch")
	// ErrReplay: the sequence number was already accepted, or is older
	// than the replay window.
	ErrReplay = errors.New("record: replayed")
	// ErrAuth: the AEAD tag did not verify.
	ErrAuth = errors.New("record: authentication failed")
	// ErrTooLarge: a payload or record above the RFC 5246 limits.
	ErrTooLarge = errors.New("record: too large")
	// ErrRoom: Seal's buffer lacks the headroom or tailroom.
	ErrRoom = errors.New("record: no room for header or tag")
	// ErrSeqExhausted: the 48-bit sequence space of the epoch is used up;
	// RFC 6347 section 4.1 requires a new handshake before it would wrap.
	ErrSeqExhausted = errors.New("record: sequence numbers exhausted")
	// ErrSuite: a cipher suite this package does not implement.
	ErrSuite = errors.New("record: unsupported cipher suite")
)

func wrap(err error, detail string) error {
	return &detailError{err: err, detail: detail}
}

// detailError is a sentinel plus a constant explanation; all instances are
// package variables, built once.
type detailError struct {
	err    error
	detail string
}

func (e *detailError) Error() string { return e.err.Error() + ": " + e.detail }
func (e *detailError) Unwrap() error { return e.err }

var (
	errShortHeader   = wrap(ErrTruncated, "shorter than the 13-byte record header")
	errLengthField   = wrap(ErrTruncated, "length field disagrees with the record size")
	errShortBody     = wrap(ErrTruncated, "body shorter than nonce and tag")
	errShortDatagram = wrap(ErrTruncated, "length field runs past the end of the datagram")
	errVersion       = wrap(ErrVersion, "version is not FE FD")
	errEpoch         = wrap(ErrEpoch, "epoch differs from the data channel's")
	errDuplicate     = wrap(ErrReplay, "sequence number already accepted")
	errTooOld        = wrap(ErrReplay, "sequence number below the replay window")
	errAuth          = wrap(ErrAuth, "bad tag")
	errRecordLarge   = wrap(ErrTooLarge, "record longer than 2^14+2048 bytes")
	errPayloadLarge  = wrap(ErrTooLarge, "payload longer than 2^14 bytes")
	errHeadroom      = wrap(ErrRoom, "offset smaller than the headroom")
	errTailroom      = wrap(ErrRoom, "buffer ends before payload plus tag")
	errPayloadRange  = wrap(ErrRoom, "negative payload length or offset")
)

// ParseHeader decodes a record header for routing: content type, epoch,
// sequence number and the length field. Only the size of b is checked: the
// version is not, because pion's first ClientHello carries FE FF (DTLS 1.0)
// and a demultiplexer must still be able to hand it to pion.
func ParseHeader(b []byte) (ct ContentType, epoch uint16, seq uint64, length int, err error) {
	if len(b) < HeaderLen {
		return 0, 0, 0, 0, errShortHeader
	}
	ct = ContentType(b[0])
	epoch = binary.BigEndian.Uint16(b[3:5])
	seq = uint48(b[5:11])
	length = int(binary.BigEndian.Uint16(b[11:13]))
	return ct, epoch, seq, length, nil
}

// NextRecord splits the first record off a datagram: RFC 6347 section 4.1.1
// lets a datagram carry several records (pion packs a handshake flight that
// way). rec has its capacity cut at its end, so writing into it can never
// touch rest.
func NextRecord(datagram []byte) (rec, rest []byte, err error) {
	if len(datagram) < HeaderLen {
		return nil, nil, errShortHeader
	}
	end := HeaderLen + int(binary.BigEndian.Uint16(datagram[11:13]))
	if end > len(datagram) {
		return nil, nil, errShortDatagram
	}
	return datagram[:end:end], datagram[end:], nil
}

func uint48(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

func putUint48(b []byte, v uint64) {
	_ = b[5]
	b[0] = byte(v >> 40)
	b[1] = byte(v >> 32)
	b[2] = byte(v >> 24)
	b[3] = byte(v >> 16)
	b[4] = byte(v >> 8)
	b[5] = byte(v)
}

// putHeader writes a record header into b[:HeaderLen].
func putHeader(b []byte, ct ContentType, epoch uint16, seq uint64, length int) {
	_ = b[HeaderLen-1]
	b[0] = byte(ct)
	binary.BigEndian.PutUint16(b[1:3], VersionDTLS12)
	binary.BigEndian.PutUint16(b[3:5], epoch)
	putUint48(b[5:11], seq)
	binary.BigEndian.PutUint16(b[11:13], uint16(length))
}

// putAAD writes the additional data of an AEAD record (RFC 5246 section
// 6.2.3.3, with DTLS's epoch||sequence_number in place of seq_num as RFC
// 6347 section 4.1.2.1 says): epoch(2) seq(6) type(1) version(2)
// plaintext length(2), 13 bytes.
func putAAD(b []byte, ct ContentType, epoch uint16, seq uint64, plaintextLen int) {
	_ = b[12]
	binary.BigEndian.PutUint16(b[0:2], epoch)
	putUint48(b[2:8], seq)
	b[8] = byte(ct)
	binary.BigEndian.PutUint16(b[9:11], VersionDTLS12)
	binary.BigEndian.PutUint16(b[11:13], uint16(plaintextLen))
}

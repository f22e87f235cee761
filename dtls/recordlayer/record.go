// Package recordlayer is kvpn's DTLS 1.2 record layer for the data channel:
// AEAD seal and open in place, sequence numbers, and a replay window
// (RFC 6347 section 4.1.2.6, bitmap as in RFC 6479).
//
// github.com/pion/dtls/v3 does the handshake; KeysFromPion turns its
// exported state into Keys, and from then on Sealer and Opener protect the
// data records. They work in the caller's buffers: Seal writes the header and
// explicit nonce into headroom in front of the payload and the tag into
// tailroom behind it, Open decrypts the body where it lies. Neither allocates.
//
// Connection IDs (RFC 9146) are supported as pion/dtls v3 implements them:
// when the handshake negotiated them, Keys.LocalCID goes into every record
// the Sealer writes (content type tls12_cid, the CID after the sequence
// number, the real content type inside the encrypted DTLSInnerPlaintext)
// and the Opener accepts only records that carry Keys.RemoteCID. Such
// records have a longer header whose size depends on the CID length, so a
// demultiplexer that sees them splits datagrams with NextRecordCID and
// finds the peer with PeekCID.
package recordlayer

import (
	"encoding/binary"
	"errors"
	"sync"

	"kvpn/record"
)

// HeaderLen is the size of a DTLS 1.2 record header (RFC 6347 section
// 4.1): type(1), version(2), epoch(2), sequence_number(6), length(2).
const HeaderLen = 13

// ContentType is the first byte of a record: the content types are those
// of TLS, shared with kvpn's TLS record engine (record.ContentType).
type ContentType = record.ContentType

// Content types of DTLS 1.2 records.
const (
	ChangeCipherSpec = record.ChangeCipherSpec
	Alert            = record.Alert
	Handshake        = record.Handshake
	ApplicationData  = record.ApplicationData
	// ConnectionID is tls12_cid (RFC 9146 section 3): the outer type of a
	// record that carries a connection ID. Its real type is encrypted.
	ConnectionID = record.ConnectionID
)

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

// Tailroom is the number of bytes Seal needs after the payload of a record
// without a connection ID: the AEAD tag (16 bytes for both AES-GCM and
// ChaCha20-Poly1305). A Sealer with a connection ID needs one byte more, for
// the real content type; Sealer.Tailroom tells.
const Tailroom = 16

// MaxCIDLen is the longest connection ID (RFC 9146 section 3: cid<0..2^8-1>).
const MaxCIDLen = 255

const (
	tagLen      = 16
	explicitLen = 8 // GCM explicit nonce, RFC 5288 section 3
)

// Errors returned by Open and NextRecord. They are wrapped
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
	// ErrCID: the record's connection ID is not the one negotiated, or the
	// record lacks one that was negotiated (or carries one that was not),
	// or a tls12_cid header was given to a function that cannot know its
	// size (NextRecord).
	ErrCID = errors.New("record: connection ID mismatch")
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

	errShortCIDHeader = wrap(ErrTruncated, "shorter than the record header with its connection ID")
	errNoInnerType    = wrap(ErrTruncated, "inner plaintext is all zeros: no content type")
	errCIDMismatch    = wrap(ErrCID, "connection ID differs from the negotiated one")
	errCIDMissing     = wrap(ErrCID, "record without the negotiated connection ID")
	errCIDUnexpected  = wrap(ErrCID, "tls12_cid record, but no connection ID was negotiated")
	errCIDLen         = wrap(ErrCID, "connection ID length outside 0..255")
	errCIDHeader      = wrap(ErrCID, "tls12_cid record: its header size depends on the connection ID length (use NextRecordCID)")
)

// NextRecord splits the first record off a datagram: RFC 6347 section 4.1.1
// lets a datagram carry several records (pion packs a handshake flight that
// way). rec has its capacity cut at its end, so writing into it can never
// touch rest. A tls12_cid record is refused with ErrCID (its header size depends on the connection ID length);
// NextRecordCID splits those.
func NextRecord(datagram []byte) (rec, rest []byte, err error) {
	if len(datagram) < HeaderLen {
		return nil, nil, errShortHeader
	}
	if ContentType(datagram[0]) == ConnectionID {
		return nil, nil, errCIDHeader
	}
	return NextRecordCID(datagram, 0)
}

// NextRecordCID is NextRecord for a channel whose records may carry a
// connection ID of cidLen bytes (0..MaxCIDLen): the header of a tls12_cid
// record is cidLen bytes longer. pion packs a connection ID record behind
// plain ones in a handshake flight (its Finished), and several of them into
// one datagram, as NextRecord's records.
func NextRecordCID(datagram []byte, cidLen int) (rec, rest []byte, err error) {
	if cidLen < 0 || cidLen > MaxCIDLen {
		return nil, nil, errCIDLen
	}
	if len(datagram) < HeaderLen {
		return nil, nil, errShortHeader
	}
	hl := HeaderLen
	if ContentType(datagram[0]) == ConnectionID {
		hl += cidLen
		if len(datagram) < hl {
			return nil, nil, errShortCIDHeader
		}
	}
	end := hl + int(binary.BigEndian.Uint16(datagram[hl-2:hl]))
	if end > len(datagram) {
		return nil, nil, errShortDatagram
	}
	return datagram[:end:end], datagram[end:], nil
}

// PeekCID returns the connection ID of the first tls12_cid record in the
// datagram dg, for a server that routes datagrams to peers by connection ID
// (RFC 9146 section 6) when their address changes. It walks the records as
// NextRecordCID does, since pion may put a connection ID record behind plain
// handshake records, and reports false if there is none, the datagram is
// malformed before it, or cidLen is not 1..MaxCIDLen. The CID aliases dg.
// Nothing is authenticated: the record must still pass the peer's Opener.
func PeekCID(dg []byte, cidLen int) ([]byte, bool) {
	if cidLen < 1 || cidLen > MaxCIDLen {
		return nil, false
	}
	for len(dg) > 0 {
		rec, rest, err := NextRecordCID(dg, cidLen)
		if err != nil {
			return nil, false
		}
		if ContentType(rec[0]) == ConnectionID {
			return rec[11 : 11+cidLen : 11+cidLen], true
		}
		dg = rest
	}
	return nil, false
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

// cidAADLen is the size of the additional data of a connection ID record
// without the CID itself (RFC 9146 section 5): seq_num_placeholder(8),
// tls12_cid(1), cid_length(1), tls12_cid(1), version(2), epoch(2),
// sequence_number(6), length_of_DTLSInnerPlaintext(2).
const cidAADLen = 23

// cidAADTemplate returns the constant parts of the additional data of a
// connection ID record with cid, for putCIDAAD to complete:
//
//	seq_num_placeholder (8 x 0xff) || tls12_cid || cid_length || tls12_cid ||
//	version || epoch || sequence_number || cid || length_of_DTLSInnerPlaintext
//
// This is RFC 9146 section 5 as published, and what pion/dtls v3 builds
// (generateAEADAdditionalDataCID); the drafts before it had another layout.
func cidAADTemplate(epoch uint16, cid []byte) []byte {
	b := make([]byte, cidAADLen+len(cid))
	binary.BigEndian.PutUint64(b[0:8], ^uint64(0))
	b[8] = byte(ConnectionID)
	b[9] = byte(len(cid))
	b[10] = byte(ConnectionID)
	binary.BigEndian.PutUint16(b[11:13], VersionDTLS12)
	binary.BigEndian.PutUint16(b[13:15], epoch)
	copy(b[21:], cid)
	return b
}

// putCIDAAD completes a copy of cidAADTemplate in b with the sequence
// number and the length of the DTLSInnerPlaintext.
func putCIDAAD(b []byte, seq uint64, innerLen int) {
	putUint48(b[15:21], seq)
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(innerLen))
}

// putCIDHeader writes the header of a connection ID record into
// b[:HeaderLen+len(cid)] (RFC 9146 section 4): tls12_cid, version, epoch,
// sequence number, cid, length.
func putCIDHeader(b []byte, epoch uint16, seq uint64, cid []byte, length int) {
	_ = b[HeaderLen+len(cid)-1]
	b[0] = byte(ConnectionID)
	binary.BigEndian.PutUint16(b[1:3], VersionDTLS12)
	binary.BigEndian.PutUint16(b[3:5], epoch)
	putUint48(b[5:11], seq)
	copy(b[11:], cid)
	binary.BigEndian.PutUint16(b[11+len(cid):], uint16(length))
}

// cidScratch holds the nonce and the additional data of a connection ID
// record, which do not fit into the record's headroom as the plain
// record's do.
type cidScratch [12 + cidAADLen + MaxCIDLen]byte

var cidScratchPool = sync.Pool{New: func() any { return new(cidScratch) }}

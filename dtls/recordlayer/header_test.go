package recordlayer

import "encoding/binary"

// The header parsers below are what the tests read Seal's records with;
// the data path does not parse headers on their own (NextRecord,
// NextRecordCID and PeekCID do what it needs).

// ParseHeader decodes a record header for routing: content type, epoch,
// sequence number and the length field. Only the size of b is checked: the
// version is not, because pion's first ClientHello carries FE FF (DTLS 1.0)
// and a demultiplexer must still be able to hand it to pion. A tls12_cid
// record is refused with ErrCID: where its length field lies depends on the
// connection ID length, which only ParseCIDHeader is told.
func ParseHeader(b []byte) (ct ContentType, epoch uint16, seq uint64, length int, err error) {
	if len(b) < HeaderLen {
		return 0, 0, 0, 0, errShortHeader
	}
	if ContentType(b[0]) == ConnectionID {
		return 0, 0, 0, 0, errCIDHeader
	}
	ct = ContentType(b[0])
	epoch = binary.BigEndian.Uint16(b[3:5])
	seq = uint48(b[5:11])
	length = int(binary.BigEndian.Uint16(b[11:13]))
	return ct, epoch, seq, length, nil
}

// ParseCIDHeader is ParseHeader for a channel whose records may carry a
// connection ID of cidLen bytes (RFC 9146 section 4): a tls12_cid record's
// header is type(1), version(2), epoch(2), sequence_number(6), cid(cidLen),
// length(2), and cid is returned (aliasing b, its capacity cut at its end).
// Any other record parses as with ParseHeader, with a nil cid. cidLen must
// be 0..MaxCIDLen.
func ParseCIDHeader(b []byte, cidLen int) (ct ContentType, epoch uint16, seq uint64, cid []byte, length int, err error) {
	if cidLen < 0 || cidLen > MaxCIDLen {
		return 0, 0, 0, nil, 0, errCIDLen
	}
	if len(b) < HeaderLen {
		return 0, 0, 0, nil, 0, errShortHeader
	}
	ct = ContentType(b[0])
	epoch = binary.BigEndian.Uint16(b[3:5])
	seq = uint48(b[5:11])
	l := 11 // where the length field is
	if ct == ConnectionID {
		if len(b) < HeaderLen+cidLen {
			return 0, 0, 0, nil, 0, errShortCIDHeader
		}
		cid = b[11 : 11+cidLen : 11+cidLen]
		l += cidLen
	}
	length = int(binary.BigEndian.Uint16(b[l : l+2]))
	return ct, epoch, seq, cid, length, nil
}

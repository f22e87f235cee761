package record

import "strconv"

// The record engines: one shape for every record layer kvpn runs in
// userspace. ktlsbridge's TLS engine (TLS 1.2 and 1.3, AES-GCM and
// ChaCha20-Poly1305) and the DTLS record layer (AES-GCM, ChaCha20-Poly1305,
// and the legacy AnyConnect AES-CBC-SHA suites) each have a Sealer and an
// Opener that work in place on the caller's buffer: the pumps leave
// Headroom bytes in front of each packet and Tailroom behind it, so a
// packet is encrypted where it was read and decrypted where it arrived,
// with no copy. Kernel TLS is the third engine; it seals inside the
// socket, so it has no Sealer, and Conn.WriteRecords is its batch seam.
// record/sealtest holds the contract every Sealer and Opener pair passes.

// ContentType is a record's content type, the first byte of a TLS or DTLS
// record (RFC 5246 section 6.2.1, RFC 6347 section 4.1; for TLS 1.3 the
// inner type, RFC 8446 section 5.2).
type ContentType uint8

// Content types.
const (
	ChangeCipherSpec ContentType = 20
	Alert            ContentType = 21
	Handshake        ContentType = 22
	ApplicationData  ContentType = 23
	// ConnectionID is tls12_cid (RFC 9146 section 3): the outer type of a
	// DTLS record that carries a connection ID. Its real type is encrypted.
	ConnectionID ContentType = 25
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
	case ConnectionID:
		return "tls12_cid"
	}
	return "content_type(" + strconv.Itoa(int(t)) + ")"
}

// Sealer protects the records of one direction, in place. It is not safe
// for concurrent use unless the implementation says so.
type Sealer interface {
	// Headroom is how many bytes Seal writes in front of the plaintext
	// (the header, and an explicit nonce or IV where the suite has one).
	Headroom() int
	// Tailroom is the most Seal writes behind the plaintext (the tag or
	// MAC and padding, TLS 1.3's inner content type).
	Tailroom() int
	// Seal turns buf[off:off+n] into one record of type ct, in place,
	// writing only within buf[off-Headroom():off+n+Tailroom()], and
	// returns the record, a subslice of buf. It fails, without writing,
	// when the room is missing or n is over MaxRecordPayload.
	Seal(buf []byte, off, n int, ct ContentType) ([]byte, error)
}

// Opener authenticates and decrypts the records of one direction, in place.
type Opener interface {
	// Open takes one whole record (header included) and returns its
	// content type and plaintext, which aliases rec. A record that fails
	// authentication, is malformed, or was already accepted is refused.
	Open(rec []byte) (ContentType, []byte, error)
}

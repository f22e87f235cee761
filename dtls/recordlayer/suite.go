package recordlayer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"strconv"

	"golang.org/x/crypto/chacha20poly1305"
)

// Suite identifies the AEAD of the data channel: the TLS cipher suite ID as
// negotiated by pion (its dtls.CipherSuiteID has the same values).
type Suite uint16

// The AEAD cipher suites this package protects records with. The names are
// those of the IANA TLS registry, as crypto/tls spells them.
const (
	// RFC 5487.
	TLS_PSK_WITH_AES_128_GCM_SHA256 Suite = 0x00a8
	// RFC 5487. pion v3.1 does not offer it; the record layer is the same
	// as for the AES-128 suite, only with a 32-byte key and a SHA-384 PRF.
	TLS_PSK_WITH_AES_256_GCM_SHA384 Suite = 0x00a9

	// RFC 5289.
	TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 Suite = 0xc02b
	TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 Suite = 0xc02c
	TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256   Suite = 0xc02f
	TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384   Suite = 0xc030

	// RFC 7905.
	TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256   Suite = 0xcca8
	TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 Suite = 0xcca9
	TLS_PSK_WITH_CHACHA20_POLY1305_SHA256         Suite = 0xccab
	TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256   Suite = 0xccac

	// The suites of the legacy AnyConnect DTLS (a resumed session keyed by
	// the client's X-DTLS-Master-Secret; no key exchange happens, so the
	// RSA in the names means nothing). RFC 5288 for GCM, RFC 5246
	// appendix A.5 (and RFC 3268) for CBC.
	TLS_RSA_WITH_AES_128_GCM_SHA256 Suite = 0x009c
	TLS_RSA_WITH_AES_256_GCM_SHA384 Suite = 0x009d
	TLS_RSA_WITH_AES_128_CBC_SHA    Suite = 0x002f
	TLS_RSA_WITH_AES_256_CBC_SHA    Suite = 0x0035
)

// suiteParams is what the record layer needs to know of a suite.
type suiteParams struct {
	name   string
	keyLen int              // AEAD key
	ivLen  int              // fixed_iv_length: 4 (GCM salt, RFC 5288) or 12 (RFC 7905)
	chacha bool             // RFC 7905 nonce, no explicit nonce in the record
	prf    func() hash.Hash // PRF hash for the key expansion (RFC 5246 section 6.3)
	cbc    bool             // AES-CBC with HMAC-SHA1, MAC-then-encrypt (cbc.go)
}

func (s Suite) params() (suiteParams, bool) {
	switch s {
	case TLS_PSK_WITH_AES_128_GCM_SHA256:
		return suiteParams{"TLS_PSK_WITH_AES_128_GCM_SHA256", 16, 4, false, sha256.New, false}, true
	case TLS_PSK_WITH_AES_256_GCM_SHA384:
		return suiteParams{"TLS_PSK_WITH_AES_256_GCM_SHA384", 32, 4, false, sha512.New384, false}, true
	case TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:
		return suiteParams{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 16, 4, false, sha256.New, false}, true
	case TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
		return suiteParams{"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 32, 4, false, sha512.New384, false}, true
	case TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:
		return suiteParams{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 16, 4, false, sha256.New, false}, true
	case TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		return suiteParams{"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 32, 4, false, sha512.New384, false}, true
	case TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return suiteParams{"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 32, 12, true, sha256.New, false}, true
	case TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:
		return suiteParams{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 32, 12, true, sha256.New, false}, true
	case TLS_PSK_WITH_CHACHA20_POLY1305_SHA256:
		return suiteParams{"TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", 32, 12, true, sha256.New, false}, true
	case TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256:
		return suiteParams{"TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", 32, 12, true, sha256.New, false}, true
	case TLS_RSA_WITH_AES_128_GCM_SHA256:
		return suiteParams{name: "TLS_RSA_WITH_AES_128_GCM_SHA256", keyLen: 16, ivLen: 4, prf: sha256.New}, true
	case TLS_RSA_WITH_AES_256_GCM_SHA384:
		return suiteParams{name: "TLS_RSA_WITH_AES_256_GCM_SHA384", keyLen: 32, ivLen: 4, prf: sha512.New384}, true
	case TLS_RSA_WITH_AES_128_CBC_SHA:
		// No fixed IV: the IV is explicit in every record (RFC 4346
		// section 6.2.3.2, which DTLS 1.0 and Cisco's DTLS 0.9 follow).
		// The PRF depends on the version (TLS 1.0's for DTLS 0.9).
		return suiteParams{name: "TLS_RSA_WITH_AES_128_CBC_SHA", keyLen: 16, cbc: true, prf: sha256.New}, true
	case TLS_RSA_WITH_AES_256_CBC_SHA:
		return suiteParams{name: "TLS_RSA_WITH_AES_256_CBC_SHA", keyLen: 32, cbc: true, prf: sha256.New}, true
	}
	return suiteParams{}, false
}

// Supported reports whether this package implements s.
func (s Suite) Supported() bool {
	_, ok := s.params()
	return ok
}

func (s Suite) String() string {
	if p, ok := s.params(); ok {
		return p.name
	}
	return "Suite(0x" + strconv.FormatUint(uint64(s), 16) + ")"
}

// explicit is the size of the explicit nonce in the record body: 8 for GCM
// (RFC 5288 section 3), none for ChaCha20-Poly1305 (RFC 7905 section 2).
// Unknown suites answer as GCM, the larger, so buffers sized by them fit.
func (s Suite) explicit() int {
	p, ok := s.params()
	switch {
	case ok && p.chacha:
		return 0
	case ok && p.cbc:
		return cbcIVLen
	}
	return explicitLen
}

// CBC reports whether s is a CBC suite (MAC-then-encrypt records, cbc.go).
func (s Suite) CBC() bool {
	p, ok := s.params()
	return ok && p.cbc
}

// MACKeyLen is the HMAC key length of a CBC suite (20 for HMAC-SHA1), 0 for
// AEAD suites.
func (s Suite) MACKeyLen() int {
	if s.CBC() {
		return macLen
	}
	return 0
}

// KeyLen and IVLen are the key block sizes of s (RFC 5246 section 6.3):
// the cipher key and the fixed IV (0 for CBC, whose IV is explicit).
func (s Suite) KeyLen() int { p, _ := s.params(); return p.keyLen }
func (s Suite) IVLen() int  { p, _ := s.params(); return p.ivLen }

// PRFHash is the hash of the suite's TLS 1.2 PRF.
func (s Suite) PRFHash() func() hash.Hash { p, _ := s.params(); return p.prf }

// Overhead returns the bytes a record without a connection ID adds to its
// payload: header, explicit nonce (8 for GCM, 0 for ChaCha20-Poly1305) and
// tag (16). Sealer.Overhead also counts a connection ID and the inner type.
func (s Suite) Overhead() int { return HeaderLen + s.explicit() + s.tail() }

// tail is the most a record adds behind its payload: the AEAD tag, or for
// CBC the MAC and up to a block of padding.
func (s Suite) tail() int {
	if s.CBC() {
		return CBCTailroom
	}
	return tagLen
}

// Headroom returns the bytes Seal needs in front of the payload of a record
// without a connection ID: header and explicit nonce. Sealer.Headroom adds
// the connection ID's length.
func (s Suite) Headroom() int { return HeaderLen + s.explicit() }

// newAEAD builds the stateless AEAD of a suite. Both crypto/cipher's GCM
// and x/crypto's ChaCha20-Poly1305 are safe for concurrent use.
func newAEAD(p suiteParams, key []byte) (cipher.AEAD, error) {
	if p.chacha {
		return chacha20poly1305.New(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

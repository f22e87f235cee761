package ktlsbridge

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"kvpn/internal/tlsprf"
)

// ErrUnsupported is wrapped by the errors for a protocol version or cipher
// suite this package cannot move to the kernel or protect in userspace.
var ErrUnsupported = errors.New("ktlsbridge: unsupported")

// Secrets captured from a crypto/tls handshake.
type Secrets struct {
	Version      uint16 // tls.VersionTLS12 or tls.VersionTLS13
	CipherSuite  uint16
	ClientRandom [32]byte
	ServerRandom [32]byte
	MasterSecret []byte // TLS 1.2 (extended master secret already applied by crypto/tls)
	ClientSecret []byte // TLS 1.3 CLIENT_TRAFFIC_SECRET_0
	ServerSecret []byte // TLS 1.3 SERVER_TRAFFIC_SECRET_0
}

// Cipher is the AEAD protecting the records.
type Cipher int

// The AEADs of the supported cipher suites.
const (
	CipherAES128GCM Cipher = iota + 1
	CipherAES256GCM
	CipherChaCha20Poly1305
)

func (c Cipher) String() string {
	switch c {
	case CipherAES128GCM:
		return "AES-128-GCM"
	case CipherAES256GCM:
		return "AES-256-GCM"
	case CipherChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return fmt.Sprintf("Cipher(%d)", int(c))
}

// keyLen is the AEAD key length in bytes, 0 for an unknown cipher.
func (c Cipher) keyLen() int {
	switch c {
	case CipherAES128GCM:
		return 16
	case CipherAES256GCM, CipherChaCha20Poly1305:
		return 32
	}
	return 0
}

// Keys protect one direction.
type Keys struct {
	Version uint16
	Cipher  Cipher
	Key     []byte
	// IV is, for TLS 1.2 AES-GCM, the 4-byte implicit salt (RFC 5288); for
	// TLS 1.2 ChaCha20-Poly1305 (RFC 7905) and for TLS 1.3, 12 bytes.
	IV []byte
	// Seq is the sequence number of the first record after the handshake.
	// TLS 1.2: 1 (the Finished record was 0). TLS 1.3: 0, which requires
	// that nothing went through crypto/tls after the handshake: in
	// particular that the server sent no NewSessionTicket
	// (tls.Config.SessionTicketsDisabled on the server).
	Seq uint64
}

// explicitNonce reports whether records carry an 8-byte explicit nonce
// (TLS 1.2 AES-GCM).
func (k *Keys) explicitNonce() bool {
	return k.Version == tls.VersionTLS12 && k.Cipher != CipherChaCha20Poly1305
}

// ivLen is the length IV must have.
func (k *Keys) ivLen() int {
	if k.explicitNonce() {
		return 4
	}
	return 12
}

// check reports whether k is complete and consistent.
func (k *Keys) check() error {
	if k.Version != tls.VersionTLS12 && k.Version != tls.VersionTLS13 {
		return fmt.Errorf("%w: TLS version %#04x", ErrUnsupported, k.Version)
	}
	n := k.Cipher.keyLen()
	if n == 0 {
		return fmt.Errorf("%w: cipher %v", ErrUnsupported, k.Cipher)
	}
	if len(k.Key) != n {
		return fmt.Errorf("ktlsbridge: %v key of %d bytes, want %d", k.Cipher, len(k.Key), n)
	}
	if len(k.IV) != k.ivLen() {
		return fmt.Errorf("ktlsbridge: %v IV of %d bytes, want %d", k.Cipher, len(k.IV), k.ivLen())
	}
	return nil
}

// suiteParams describes a supported cipher suite.
type suiteParams struct {
	version uint16
	cipher  Cipher
	hash    func() hash.Hash // HKDF hash (TLS 1.3) or PRF hash (TLS 1.2)
}

func sha384New() hash.Hash { return sha512.New384() }

// lookupSuite returns the parameters of a supported suite of version.
func lookupSuite(version, id uint16) (suiteParams, error) {
	var p suiteParams
	switch id {
	case tls.TLS_AES_128_GCM_SHA256:
		p = suiteParams{tls.VersionTLS13, CipherAES128GCM, sha256.New}
	case tls.TLS_AES_256_GCM_SHA384:
		p = suiteParams{tls.VersionTLS13, CipherAES256GCM, sha384New}
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		p = suiteParams{tls.VersionTLS13, CipherChaCha20Poly1305, sha256.New}
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:
		p = suiteParams{tls.VersionTLS12, CipherAES128GCM, sha256.New}
	case tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		p = suiteParams{tls.VersionTLS12, CipherAES256GCM, sha384New}
	case tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		p = suiteParams{tls.VersionTLS12, CipherChaCha20Poly1305, sha256.New}
	default:
		return p, fmt.Errorf("%w: cipher suite %s", ErrUnsupported, tls.CipherSuiteName(id))
	}
	if version != p.version {
		return p, fmt.Errorf("%w: cipher suite %s with %s", ErrUnsupported,
			tls.CipherSuiteName(id), tls.VersionName(version))
	}
	return p, nil
}

// DeriveKeys computes the keys of both directions from the secrets of a
// handshake. TLS 1.3: key = HKDF-Expand-Label(secret, "key", "", keylen),
// iv = HKDF-Expand-Label(secret, "iv", "", 12) with the suite's hash (RFC
// 8446 section 7.3). TLS 1.2: key_block = PRF(master_secret, "key
// expansion", server_random + client_random) with the suite's PRF hash,
// split into client key, server key, client IV, server IV (no MAC keys for
// AEAD suites; RFC 5246 section 6.3). An unsupported version or suite gives
// an error wrapping ErrUnsupported.
func DeriveKeys(s *Secrets) (client, server Keys, err error) {
	if s == nil {
		return client, server, errors.New("ktlsbridge: no secrets")
	}
	if s.Version != tls.VersionTLS12 && s.Version != tls.VersionTLS13 {
		return client, server, fmt.Errorf("%w: %s", ErrUnsupported, tls.VersionName(s.Version))
	}
	p, err := lookupSuite(s.Version, s.CipherSuite)
	if err != nil {
		return client, server, err
	}
	keyLen := p.cipher.keyLen()
	client = Keys{Version: p.version, Cipher: p.cipher}
	server = client
	if p.version == tls.VersionTLS13 {
		size := p.hash().Size()
		if len(s.ClientSecret) != size || len(s.ServerSecret) != size {
			return Keys{}, Keys{}, fmt.Errorf("ktlsbridge: TLS 1.3 traffic secrets of %d and %d bytes, want %d",
				len(s.ClientSecret), len(s.ServerSecret), size)
		}
		for _, d := range []struct {
			k      *Keys
			secret []byte
		}{{&client, s.ClientSecret}, {&server, s.ServerSecret}} {
			if d.k.Key, err = expandLabel(p.hash, d.secret, "key", keyLen); err != nil {
				return Keys{}, Keys{}, err
			}
			if d.k.IV, err = expandLabel(p.hash, d.secret, "iv", 12); err != nil {
				return Keys{}, Keys{}, err
			}
		}
		return client, server, nil
	}

	if len(s.MasterSecret) != 48 {
		return Keys{}, Keys{}, fmt.Errorf("ktlsbridge: TLS 1.2 master secret of %d bytes, want 48", len(s.MasterSecret))
	}
	if s.ClientRandom == ([32]byte{}) || s.ServerRandom == ([32]byte{}) {
		return Keys{}, Keys{}, errors.New("ktlsbridge: TLS 1.2 needs both hello randoms")
	}
	ivLen := client.ivLen()
	seed := make([]byte, 0, 64)
	seed = append(seed, s.ServerRandom[:]...)
	seed = append(seed, s.ClientRandom[:]...)
	block := tlsprf.PRF12(p.hash, s.MasterSecret, "key expansion", seed, 2*keyLen+2*ivLen)
	next := func(n int) []byte {
		b := block[:n:n]
		block = block[n:]
		return b
	}
	client.Key = next(keyLen)
	server.Key = next(keyLen)
	client.IV = next(ivLen)
	server.IV = next(ivLen)
	client.Seq, server.Seq = 1, 1
	return client, server, nil
}

// expandLabel is HKDF-Expand-Label(secret, label, "", n) of RFC 8446
// section 7.1: the info is the HkdfLabel structure with "tls13 " before the
// label and an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	const prefix = "tls13 "
	info := make([]byte, 0, 2+1+len(prefix)+len(label)+1)
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, 0) // context: empty
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		return nil, fmt.Errorf("ktlsbridge: HKDF-Expand-Label %q: %w", label, err)
	}
	return out, nil
}

// Values of struct tls_crypto_info (include/uapi/linux/tls.h), which
// golang.org/x/sys/unix does not define.
const (
	infoCipherAESGCM128        = 51
	infoCipherAESGCM256        = 52
	infoCipherChaCha20Poly1305 = 54

	infoHeaderLen = 4 // u16 version, u16 cipher_type, host byte order
	infoSeqLen    = 8 // rec_seq, big-endian
)

// Sizes of the whole crypto_info structures.
const (
	kernelInfoLenAESGCM128 = infoHeaderLen + 8 + 16 + 4 + infoSeqLen // tls12_crypto_info_aes_gcm_128: 40
	kernelInfoLenAESGCM256 = infoHeaderLen + 8 + 32 + 4 + infoSeqLen // tls12_crypto_info_aes_gcm_256: 56
	kernelInfoLenChaCha20  = infoHeaderLen + 12 + 32 + infoSeqLen    // tls12_crypto_info_chacha20_poly1305: 56
)

// KernelInfo marshals k as the kernel's crypto_info for
// setsockopt(SOL_TLS, TLS_TX or TLS_RX): struct tls_crypto_info {u16
// version; u16 cipher_type} in host byte order, then for AES-GCM iv[8],
// key, salt[4], rec_seq[8] (40 bytes for AES-128, 56 for AES-256) and for
// ChaCha20-Poly1305 iv[12], key[32], rec_seq[8] (56 bytes).
//
// TLS 1.3 AES-GCM: salt = IV[0:4], iv = IV[4:12]. ChaCha20-Poly1305 (both
// versions): iv = all of IV. TLS 1.2 AES-GCM: salt = the implicit IV and iv,
// the explicit nonce the kernel writes into the first record and then
// increments, = the record sequence number, as crypto/tls does, so that no
// nonce is ever used twice with the key. rec_seq = Seq, big-endian.
//
// KernelInfo returns nil for keys that are incomplete or unsupported.
func (k Keys) KernelInfo() []byte {
	if k.check() != nil {
		return nil
	}
	var b []byte
	var cipherType uint16
	switch k.Cipher {
	case CipherAES128GCM:
		b, cipherType = make([]byte, 0, kernelInfoLenAESGCM128), infoCipherAESGCM128
	case CipherAES256GCM:
		b, cipherType = make([]byte, 0, kernelInfoLenAESGCM256), infoCipherAESGCM256
	default:
		b, cipherType = make([]byte, 0, kernelInfoLenChaCha20), infoCipherChaCha20Poly1305
	}
	b = binary.NativeEndian.AppendUint16(b, k.Version)
	b = binary.NativeEndian.AppendUint16(b, cipherType)
	switch {
	case k.Cipher == CipherChaCha20Poly1305:
		b = append(b, k.IV...)
		b = append(b, k.Key...)
	case k.Version == tls.VersionTLS13:
		b = append(b, k.IV[4:12]...)
		b = append(b, k.Key...)
		b = append(b, k.IV[0:4]...)
	default: // TLS 1.2 AES-GCM
		b = binary.BigEndian.AppendUint64(b, k.Seq)
		b = append(b, k.Key...)
		b = append(b, k.IV...)
	}
	return binary.BigEndian.AppendUint64(b, k.Seq)
}

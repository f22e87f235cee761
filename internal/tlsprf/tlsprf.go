// Package tlsprf is the TLS pseudo-random function, which kvpn needs
// outside crypto/tls twice: to expand a TLS 1.2 master secret into the
// record keys kernel TLS takes (ktlsbridge), and in the legacy AnyConnect
// DTLS handshake it answers itself (dtls: DTLS 1.2, and Cisco's DTLS 0.9
// with TLS 1.0's PRF).
package tlsprf

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"hash"
)

// PRF12 is the TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label +
// seed) with the suite's hash h, cut to n bytes.
func PRF12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	return pHash(h, secret, labelSeed(label, seed), n)
}

// PRF10 is the TLS 1.0 PRF (RFC 2246 section 5): P_MD5 of the secret's
// first half XOR P_SHA-1 of its second half (the halves share the middle
// byte of an odd-length secret), cut to n bytes.
func PRF10(secret []byte, label string, seed []byte, n int) []byte {
	ls := labelSeed(label, seed)
	half := (len(secret) + 1) / 2
	out := pHash(md5.New, secret[:half], ls, n)
	s := pHash(sha1.New, secret[len(secret)-half:], ls, n)
	for i := range out {
		out[i] ^= s[i]
	}
	return out
}

func labelSeed(label string, seed []byte) []byte {
	ls := make([]byte, 0, len(label)+len(seed))
	ls = append(ls, label...)
	return append(ls, seed...)
}

// pHash is P_hash (RFC 5246 section 5, RFC 2246 section 5): it chains
// A(i) = HMAC(secret, A(i-1)), A(0) = seed, and outputs
// HMAC(secret, A(i) + seed) until n bytes.
func pHash(h func() hash.Hash, secret, seed []byte, n int) []byte {
	mac := hmac.New(h, secret)
	mac.Write(seed)
	a := mac.Sum(nil) // A(1)
	out := make([]byte, 0, n+mac.Size())
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		mac.Write(seed)
		out = mac.Sum(out)
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
	return out[:n:n]
}

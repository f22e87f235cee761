package dtls

import (
	"os"

	piondtls "github.com/pion/dtls/v3"
	"golang.org/x/sys/cpu"
)

// suitesAES is what stock peers get: PSK AES-128-GCM, which openconnect and
// ocserv both accept (pion has no PSK AES-256-GCM).
var suitesAES = []piondtls.CipherSuiteID{piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256}

// suitesChaCha puts ChaCha20-Poly1305 (RFC 7905) first: between two kvpn
// peers, negotiated by the X-Kvpn-DTLS-Cipher extension (docs/protocol.md),
// for CPUs without AES instructions, where it is several times faster.
var suitesChaCha = []piondtls.CipherSuiteID{
	piondtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
}

// Suites returns the DTLS suites to offer or accept.
func Suites(chacha bool) []piondtls.CipherSuiteID {
	if chacha {
		return suitesChaCha
	}
	return suitesAES
}

// PreferChaCha reports whether this machine should ask for ChaCha20: when
// the CPU lacks AES-GCM instructions, or when KVPN_DTLS_CHACHA=1 forces it
// (tests; KVPN_DTLS_CHACHA=0 forbids it).
func PreferChaCha() bool {
	switch os.Getenv("KVPN_DTLS_CHACHA") {
	case "1":
		return true
	case "0":
		return false
	}
	switch {
	case cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ:
		return false
	case cpu.ARM64.HasAES && cpu.ARM64.HasPMULL:
		return false
	}
	return true
}

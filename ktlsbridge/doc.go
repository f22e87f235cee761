// Package ktlsbridge hands a TLS connection to the kernel's record layer
// (kTLS, TLS_TX and TLS_RX) after crypto/tls has done the handshake, and
// falls back, per direction, to a userspace record layer when the kernel
// cannot take it.
//
// The handshake runs in crypto/tls over a [Capture]: its connection never
// lets crypto/tls read past the record being read (so nothing that follows
// Finished is swallowed), it notes the two hello randoms, and its
// per-connection key log collects the secrets. [DeriveKeys] turns those into
// one [Keys] per direction, which [Keys.KernelInfo] marshals for
// setsockopt(SOL_TLS) and [NewSealer] / [NewOpener] use in userspace.
package ktlsbridge

//go:build !linux

// kvpn builds only on Linux: its data path is kernel TLS, TUN with
// IFF_VNET_HDR, UDP GSO/GRO and rtnetlink (docs/architecture.md). On any
// other system this file is all of the package, and the undefined name
// below is the build error that says so.

package main

var _ = kvpn_requires_linux // kvpnload: kvpn builds only on Linux

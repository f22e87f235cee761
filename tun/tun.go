// Package tun moves batches of IP packets between the kernel and kvpn, with
// headroom in front of each packet so headers and encryption can be done in
// place.
package tun

import (
	"errors"
	"fmt"
)

// Device is a TUN interface read and written in batches. Packets live at
// bufs[i][offset:]; the offset bytes in front are headroom the device may use
// (the virtio-net header goes at bufs[i][offset-10:offset]). Same contract as
// golang.zx2c4.com/wireguard/tun.Device Read/Write.
type Device interface {
	// Read blocks until at least one packet is available and returns how
	// many of bufs it filled; packet i is bufs[i][offset:offset+sizes[i]].
	// Pass len(bufs) >= BatchSize(): the offload backend splits one TSO
	// super-packet into up to 64 KiB/MSS packets and returns
	// wireguard's tun.ErrTooManySegments (with n packets still valid) when
	// they do not fit.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write sends the packets bufs[i][offset:] (each sliced to its length)
	// into the kernel. It needs offset >= 10 and may scribble on the
	// headroom, on the packets and on the slice headers in bufs: the offload
	// backend coalesces TCP/UDP flows into the first packet's buffer, growing
	// it up to its capacity (see NewBuffers). n is len(bufs) on success. On
	// error, the plain backend still tries every packet and n counts those
	// written; the offload backend reports n = 0 because coalescing hides
	// which input packets went out.
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is how many bufs Read may fill at once.
	BatchSize() int
	// Name is the interface name, e.g. "tun0".
	Name() string
	// MTU is the interface's current MTU, looked up by name in the calling
	// thread's network namespace; if that fails, the MTU set by Create.
	MTU() int
	// Close destroys the interface (it is not persistent) and unblocks a
	// pending Read, which then returns an error matching os.ErrClosed.
	// Calling it again is a no-op.
	Close() error
}

// Headroom is how many bytes callers leave before every packet: room for the
// 10-byte virtio-net header the offload backend writes there, and, for packets
// read from the device, for kvpn's own framing in front of them (CSTP 8 bytes;
// DTLS 1.2 record header 13 + AES-GCM explicit nonce 8), so packets are
// framed and sealed in place.
const Headroom = 32

// MaxPacketSize is the largest (super-)packet a buffer must hold after the
// headroom: the IPv4 total-length limit, which bounds TSO/GRO packets too.
const MaxPacketSize = 65535

// virtioNetHdrLen is sizeof(struct virtio_net_hdr), the prefix the kernel
// puts before every packet read from (and expects on every packet written
// to) a TUN opened with IFF_VNET_HDR.
const virtioNetHdrLen = 10

// Backend selects the TUN implementation.
type Backend string

const (
	// BackendOffload uses golang.zx2c4.com/wireguard/tun with IFF_VNET_HDR
	// and TSO/USO offloads: fewer, larger reads and writes.
	BackendOffload Backend = "offload"
	// BackendPlain uses github.com/songgao/water: one packet per syscall,
	// no offloads. Portable baseline and fallback.
	BackendPlain Backend = "plain"
)

// ParseBackend parses "offload" or "plain".
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendOffload, BackendPlain:
		return b, nil
	}
	return "", fmt.Errorf("tun: unknown backend %q (want %q or %q)", s, BackendOffload, BackendPlain)
}

// Create makes a TUN device named name (empty: the kernel picks "tunN"; a
// "%d" in name is filled in by the kernel too) with the given MTU. The device
// appears in the network namespace of the calling thread: the kernel binds it
// to current->nsproxy->net_ns when /dev/net/tun is opened.
func Create(name string, mtu int, backend Backend) (Device, error) {
	// IFNAMSIZ includes the NUL; water would silently truncate a long name.
	if len(name) >= ifNameSize {
		return nil, fmt.Errorf("tun: interface name %q longer than %d bytes", name, ifNameSize-1)
	}
	// The kernel's TUN limits: dev->min_mtu = 68 (IPv4 minimum),
	// dev->max_mtu = 65535. Checking here gives a clearer error than EINVAL.
	if mtu < 68 || mtu > MaxPacketSize {
		return nil, fmt.Errorf("tun: MTU %d out of range [68, %d]", mtu, MaxPacketSize)
	}
	switch backend {
	case BackendOffload:
		return createOffload(name, mtu)
	case BackendPlain:
		return createPlain(name, mtu)
	}
	return nil, fmt.Errorf("tun: unknown backend %q", backend)
}

// NewBuffers allocates n packet buffers of Headroom+MaxPacketSize bytes (one
// big allocation sliced up), for callers' batch loops.
func NewBuffers(n int) [][]byte {
	const size = Headroom + MaxPacketSize
	mem := make([]byte, n*size)
	bufs := make([][]byte, n)
	for i := range bufs {
		// Cap each buffer at its own end: the offload Write appends
		// coalesced segments to a buffer up to cap(), which must never
		// reach into the neighbouring buffer.
		bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}

// errNoBuffers is returned by Read when called with no buffers.
var errNoBuffers = errors.New("tun: Read needs at least one buffer")

const ifNameSize = 16 // IFNAMSIZ

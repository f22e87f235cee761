// Package tuntest provides an in-memory tun.Device for unit tests of code
// that pumps packets between a TUN device and the network.
//
// NewPair returns two connected Devices, a and b: packets written to a are
// read from b and vice versa, in order, without loss. Give one end to the code
// under test and play the kernel with the other: Write on it injects packets
// the code will Read, Read on it collects what the code Wrote.
//
// The double keeps the real backends' contract strict so bugs show up in unit
// tests: Write needs offset >= 10 and overwrites bufs[i][offset-10:offset]
// (where the offload backend puts its virtio-net header), rejects packets
// whose first nibble is not 4 or 6 (as the kernel's TUN write does with
// EINVAL), and Read fails with io.ErrShortBuffer for a packet that does not
// fit bufs[i][offset:].
package tuntest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"kvpn/tun"
)

// Config sets the shape of a pair; zero fields take the defaults.
type Config struct {
	Name      string // default "tuntest0"/"tuntest1"
	MTU       int    // default 1400
	BatchSize int    // packets per Read; default 128 (the offload backend's)
	QueueLen  int    // packets buffered per direction before Write blocks; default 1024
}

// Device is one end of an in-memory pair. It implements tun.Device.
type Device struct {
	name  string
	mtu   int
	batch int

	in   chan []byte // packets for this end's Read
	peer *Device

	closeOnce sync.Once
	closed    chan struct{}
}

var _ tun.Device = (*Device)(nil)

// NewPair returns two connected Devices with the default Config.
func NewPair() (a, b *Device) { return NewPairConfig(Config{}) }

// NewPairConfig returns two connected Devices.
func NewPairConfig(c Config) (a, b *Device) {
	if c.MTU == 0 {
		c.MTU = 1400
	}
	if c.BatchSize == 0 {
		c.BatchSize = 128
	}
	if c.QueueLen == 0 {
		c.QueueLen = 1024
	}
	mk := func(suffix string) *Device {
		name := c.Name
		if name == "" {
			name = "tuntest" + suffix
		}
		return &Device{name: name, mtu: c.MTU, batch: c.BatchSize,
			in: make(chan []byte, c.QueueLen), closed: make(chan struct{})}
	}
	a, b = mk("0"), mk("1")
	a.peer, b.peer = b, a
	return a, b
}

// Read blocks for the first packet, then takes whatever else is queued, up to
// min(len(bufs), BatchSize()).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) < len(bufs) {
		return 0, errors.New("tuntest: Read needs len(sizes) >= len(bufs) > 0")
	}
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	default:
	}
	var p []byte
	select {
	case p = <-d.in:
	case <-d.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		if len(p) > len(bufs[n])-offset {
			return n, fmt.Errorf("tuntest: %d-byte packet does not fit buffer: %w", len(p), io.ErrShortBuffer)
		}
		sizes[n] = copy(bufs[n][offset:], p)
		n++
		if n == len(bufs) || n == d.batch {
			return n, nil
		}
		select {
		case p = <-d.in:
		default:
			return n, nil
		}
	}
}

// Write copies each packet to the peer's queue, blocking while it is full.
// Packets for a closed peer are dropped, as the kernel drops packets routed
// to an interface that is gone.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if offset < 10 {
		return 0, fmt.Errorf("tuntest: Write offset %d < 10 (no room for the virtio-net header)", offset)
	}
	for i, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 || (pkt[0]>>4 != 4 && pkt[0]>>4 != 6) {
			return i, fmt.Errorf("tuntest: packet %d is not IPv4 or IPv6", i)
		}
		clear(b[offset-10 : offset])
		select {
		case d.peer.in <- append([]byte(nil), pkt...):
		case <-d.peer.closed:
		case <-d.closed:
			return i, os.ErrClosed
		}
	}
	return len(bufs), nil
}

func (d *Device) BatchSize() int { return d.batch }
func (d *Device) Name() string   { return d.name }
func (d *Device) MTU() int       { return d.mtu }

// Close closes this end: its pending and later Reads and Writes return
// os.ErrClosed; the peer's Writes are dropped from then on.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

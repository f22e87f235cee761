package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// createOffload opens the TUN itself and hands the fd to wireguard's
// CreateUnmonitoredTUNFromFD rather than calling wgtun.CreateTUN: same
// IFF_VNET_HDR + TUNSETOFFLOAD device and the same batched Read/Write, but
// without CreateTUN's two event goroutines (a netlink listener, and a
// "hack listener" doing a zero-length write() every second). Those block
// forever on a full Events channel unless drained, and a netlink error
// (e.g. ENOBUFS on a busy link table) is handed to the next Read, which a
// packet pump would take as a dead device. kvpn does not need link events.
func createOffload(name string, mtu int) (Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		// IFF_NO_PI: packets start with the IP header (the kernel reads
		// the IP version nibble to pick the protocol). IFF_VNET_HDR: each
		// packet is prefixed by a struct virtio_net_hdr describing GSO.
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err == nil {
		// Checked here, while we still own fd, so a kernel without TSO
		// on TUN (all have it since 2.6.27) yields a clear error instead of
		// an fd stranded inside wireguard's error path.
		err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6)
	}
	if err != nil {
		unix.Close(fd) // the device vanishes with its last fd (not persistent)
		return nil, fmt.Errorf("tun: create %q (offload): %w", name, err)
	}
	// From here the fd belongs to an *os.File inside wireguard; on error its
	// finalizer closes it, so we must not (the number could be reused).
	dev, ifname, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("tun: create %q (offload): %w", name, err)
	}
	if err := setMTU(ifname, mtu); err != nil {
		dev.Close()
		return nil, err
	}
	// Keep super-packets small enough to travel as one CSTP frame (see
	// GSOMaxSize); the default, 64 KiB, is only a few bytes more.
	if link, err := netlink.LinkByName(ifname); err == nil {
		netlink.LinkSetGSOMaxSize(link, GSOMaxSize)
	}
	return &offloadDevice{dev: dev, name: ifname, mtu: mtu}, nil
}

// drainDisabled turns Read's drain off (KVPN_TUN_NO_DRAIN=1): one frame
// per call, as wireguard's Read does, to compare the two.
var drainDisabled = os.Getenv("KVPN_TUN_NO_DRAIN") == "1"

type offloadDevice struct {
	dev  wgtun.Device
	name string
	mtu  int

	// Read's frame, read straight from the fd and split by splitFrame;
	// pending > 0 is a frame read but not yet split, because the buffers of
	// the last call ran out (only the reading goroutine).
	frame   []byte
	pending int
	// readErr is a bad frame met while draining, reported by the next call.
	readErr error

	// The non-blocking read of ReadGSOBatch and of Read's drain, made once (a closure per
	// call would be allocated per call); only the reading goroutine.
	rc     syscall.RawConn
	tryFn  func(fd uintptr) bool
	tryBuf []byte
	tryN   int
	tryErr error
}

// Read blocks for one frame and then reads, without blocking, the frames
// already queued, while bufs last (drainFrames). wireguard's Read takes one
// frame per call: fine for TCP, whose bursts the kernel hands over as one
// super-packet, but a flood of small packets (UDP, ACKs of many flows)
// then costs a read and a send per packet.
func (d *offloadDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.read(bufs, sizes, offset, nil)
}

// ReadTaking implements VirtioDevice: Read, with super-packets offered to
// take whole first.
func (d *offloadDevice) ReadTaking(bufs [][]byte, sizes []int, offset int, take func(frame []byte) bool) (int, error) {
	return d.read(bufs, sizes, offset, take)
}

// read is Read and ReadTaking: a super-packet read first in a call is
// offered to take (when not nil) before it is split; one met by the drain
// is kept for the next call instead, so that it is offered before, never
// behind, the packets read with it.
func (d *offloadDevice) read(bufs [][]byte, sizes []int, offset int, take func([]byte) bool) (int, error) {
	if len(bufs) == 0 {
		return 0, errNoBuffers
	}
	if err := d.readErr; err != nil {
		d.readErr = nil
		return 0, err
	}
	if d.pending == 0 {
		if d.frame == nil {
			d.frame = make([]byte, VirtioHdrLen+MaxPacketSize)
		}
		n, err := d.dev.File().Read(d.frame)
		if err != nil {
			if errors.Is(err, syscall.EBADFD) {
				err = os.ErrClosed
			}
			return 0, err
		}
		d.pending = n
	}
	if take != nil && isSuperPacket(d.frame[:d.pending]) && take(d.frame[:d.pending]) {
		d.pending = 0
		return 0, nil
	}
	n, err := splitFrame(d.frame[:d.pending], bufs, sizes, offset)
	if err != nil {
		d.pending = 0 // unusable, even with every buffer: dropped
		if errors.Is(err, errNoRoom) {
			return 0, fmt.Errorf("%w (%d buffers)", wgtun.ErrTooManySegments, len(bufs))
		}
		return 0, err
	}
	d.pending = 0
	return d.drainFrames(bufs, sizes, offset, n, take != nil), nil
}

// drainFrames is Read's loop over the frames queued behind the first: n
// packets are in bufs already. It goes on only while frames are single
// packets: a super-packet is a batch already, and draining more behind it
// made bigger bursts that cost bulk throughput and loaded RTT
// (docs/performance.md). It stops at the first read that would block,
// when bufs are full, or at a frame that does not fit what is left (kept
// as pending for the next call, so nothing is dropped). With keepSuper a
// super-packet is kept as pending too, unsplit, for ReadTaking's next call.
func (d *offloadDevice) drainFrames(bufs [][]byte, sizes []int, offset, n int, keepSuper bool) int {
	if n > 1 || drainDisabled || !d.initTryRead() {
		return n
	}
	for last := 1; n < len(bufs) && last == 1; {
		d.tryBuf = d.frame
		err := d.rc.Read(d.tryFn)
		d.tryBuf = nil
		if err != nil || d.tryErr != nil || d.tryN <= 0 {
			break // EAGAIN: nothing queued (or closed: the next call says so)
		}
		if keepSuper && isSuperPacket(d.frame[:d.tryN]) {
			d.pending = d.tryN
			break
		}
		k, err := splitFrame(d.frame[:d.tryN], bufs[n:], sizes[n:], offset)
		if errors.Is(err, errNoRoom) {
			d.pending = d.tryN
			break
		}
		if err != nil {
			d.readErr = err
			break
		}
		n += k
		last = k
	}
	return n
}

func (d *offloadDevice) Write(bufs [][]byte, offset int) (int, error) {
	// wireguard returns bytes written, not packets; normalize.
	if _, err := d.dev.Write(bufs, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

func (d *offloadDevice) BatchSize() int { return d.dev.BatchSize() }
func (d *offloadDevice) Name() string   { return d.name }
func (d *offloadDevice) MTU() int       { return linkMTU(d.name, d.mtu) }
func (d *offloadDevice) Close() error   { return d.dev.Close() } // idempotent (sync.Once inside)

// createPlain uses water: one packet per read()/write(), no virtio header.
// (water leaks its fd if TUNSETIFF fails, e.g. EBUSY for a name in use.)
func createPlain(name string, mtu int) (Device, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name},
	})
	if err != nil {
		return nil, fmt.Errorf("tun: create %q (plain): %w", name, err)
	}
	d := &plainDevice{ifce: ifce, mtu: mtu}
	// water opens /dev/net/tun without O_CLOEXEC; an fd inherited by a
	// child (a route script, say) would keep the interface alive after Close.
	if f, ok := ifce.ReadWriteCloser.(*os.File); ok {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.CloseOnExec(int(fd)) })
		}
	}
	if err := setMTU(ifce.Name(), mtu); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

type plainDevice struct {
	ifce      *water.Interface
	mtu       int
	closeOnce sync.Once
	closeErr  error
}

func (d *plainDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, errNoBuffers
	}
	// The fd is non-blocking and in Go's netpoller (water sets O_NONBLOCK),
	// so Close wakes this Read with os.ErrClosed.
	n, err := d.ifce.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

func (d *plainDevice) Write(bufs [][]byte, offset int) (int, error) {
	if offset < virtioNetHdrLen {
		// Not needed here, but keep the backends interchangeable.
		return 0, fmt.Errorf("tun: Write offset %d < %d", offset, virtioNetHdrLen)
	}
	var errs []error
	n := 0
	for _, b := range bufs {
		// A TUN write() takes exactly one packet; one bad packet (EINVAL
		// for a non-IP version nibble) must not drop the rest.
		if _, err := d.ifce.Write(b[offset:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return n, err
			}
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (d *plainDevice) BatchSize() int { return 1 }
func (d *plainDevice) Name() string   { return d.ifce.Name() }
func (d *plainDevice) MTU() int       { return linkMTU(d.ifce.Name(), d.mtu) }

func (d *plainDevice) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.ifce.Close() })
	return d.closeErr
}

// setMTU sets the MTU through rtnetlink in the calling thread's namespace,
// which is where the device was just created.
func setMTU(name string, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.LinkSetMTU(link, mtu)
	}
	if err != nil {
		return fmt.Errorf("tun: set MTU %d on %s: %w", mtu, name, err)
	}
	return nil
}

func linkMTU(name string, fallback int) int {
	if link, err := netlink.LinkByName(name); err == nil {
		return link.Attrs().MTU
	}
	return fallback
}

// ReadGSOBatch implements VirtioDevice: frames straight from the TUN fd,
// each the virtio-net header and the packet as the kernel built it (a
// super-packet for a TCP burst), without the split that Read does.
func (d *offloadDevice) ReadGSOBatch(bufs [][]byte, sizes []int) (int, error) {
	if d.pending > 0 {
		// A frame Read kept back: hand it over as it is.
		sizes[0] = copy(bufs[0], d.frame[:d.pending])
		d.pending = 0
	} else {
		n, err := d.dev.File().Read(bufs[0])
		if err != nil {
			return 0, err
		}
		sizes[0] = n
	}
	if !d.initTryRead() {
		return 1, nil
	}
	k := 1
	for ; k < len(bufs); k++ {
		d.tryBuf = bufs[k]
		if err := d.rc.Read(d.tryFn); err != nil || d.tryErr != nil {
			break // EAGAIN: nothing more queued (or closed: the next call says so)
		}
		sizes[k] = d.tryN
	}
	d.tryBuf = nil
	return k, nil
}

// initTryRead makes the non-blocking read once (a closure per call would
// be allocated per call); false if the fd offers no raw access.
func (d *offloadDevice) initTryRead() bool {
	if d.rc == nil {
		rc, err := d.dev.File().SyscallConn()
		if err != nil {
			return false
		}
		d.rc, d.tryFn = rc, d.tryRead
	}
	return true
}

// tryRead is one read(2) that does not wait for the fd to be readable.
func (d *offloadDevice) tryRead(fd uintptr) bool {
	d.tryN, d.tryErr = unix.Read(int(fd), d.tryBuf)
	return true
}

// WriteGSO writes one frame to the TUN fd; the kernel segments or
// delivers the super-packet as it is (tun_get_user).
func (d *offloadDevice) WriteGSO(frame []byte) error {
	_, err := d.dev.File().Write(frame)
	return err
}

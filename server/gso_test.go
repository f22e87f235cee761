package server

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"kvpn/tun"
)

// tsoFrame is a TCPv4 super-packet frame from 192.0.2.7 to dst: a
// virtio-net header for TSO with gsoSize-byte segments, 20-byte IP and TCP
// headers, and payload bytes of data.
func tsoFrame(dst string, gsoSize, payload int) []byte {
	f := make([]byte, tun.VirtioHdrLen+40+payload)
	f[0], f[1] = 1, 1 // NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4
	binary.LittleEndian.PutUint16(f[2:], 40)
	binary.LittleEndian.PutUint16(f[4:], uint16(gsoSize))
	binary.LittleEndian.PutUint16(f[6:], 20)
	binary.LittleEndian.PutUint16(f[8:], 16)
	p := f[tun.VirtioHdrLen:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = 6
	src, d := netip.MustParseAddr("192.0.2.7").As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], src[:])
	copy(p[16:], d[:])
	p[20+12] = 5 << 4 // TCP data offset
	for i := 40; i < len(p); i++ {
		p[i] = byte(i)
	}
	return f
}

// TestTakeFrame: the TUN reader's offer of a super-packet is taken whole,
// and queued as one frame batch, only for a connected session whose
// client asked for frames (gsoDown) and whose traffic goes over TLS, and
// only when the client would accept the frame; every other frame is left
// to be split and routed as packets.
func TestTakeFrame(t *testing.T) {
	ts := newTestServer(t, `ipv4-network = "10.77.0.0/24"
listen = "192.0.2.1:443"
`)
	ts.batches.New = func() any { return newBatch(ts.cfg.MTU) }
	sess := ts.connect(t, "alice")
	dst := sess.addr.String()
	frame := tsoFrame(dst, 1360, 5*1360)

	if ts.takeFrame(frame) {
		t.Fatal("frame taken for a client that did not ask for frames")
	}
	sess.gsoDown.Store(1400)
	if !ts.takeFrame(frame) {
		t.Fatal("frame not taken for a client that asked for frames")
	}
	select {
	case b := <-sess.queue:
		if !b.frame || b.n != 1 || !bytes.Equal(b.pkts[0][tun.Headroom:], frame) {
			t.Errorf("queued batch: frame %v, %d entries, same bytes %v", b.frame, b.n, bytes.Equal(b.pkts[0][tun.Headroom:], frame))
		}
		if n := tun.GSOSegments(b.pkts[0][tun.Headroom:]); n != 5 {
			t.Errorf("GSOSegments = %d, want 5", n)
		}
		ts.putBatch(b)
	default:
		t.Fatal("nothing queued")
	}

	for _, c := range []struct {
		name  string
		frame []byte
		setup func()
	}{
		{"over DTLS", frame, func() { sess.preferDTLS.Store(true) }},
		{"segments over the client's MTU", tsoFrame(dst, 1460, 3*1460), nil},
		{"no session", tsoFrame("10.77.0.200", 1360, 5*1360), nil},
		{"not a frame the client takes", frame[:len(frame)-1], nil},
		{"detached", frame, func() { sess.connected.Store(false) }},
	} {
		sess.preferDTLS.Store(false)
		sess.connected.Store(true)
		if c.setup != nil {
			c.setup()
		}
		if ts.takeFrame(c.frame) {
			t.Errorf("%s: frame taken", c.name)
			ts.putBatch(<-sess.queue)
		}
	}
	sess.preferDTLS.Store(false)
	sess.connected.Store(true)

	// Behind a long queue frames are split instead: the queue's bound
	// holds, with 64 KiB frames as with packets.
	for range maxQueuedForFrames {
		sess.queue <- ts.getBatch()
	}
	if ts.takeFrame(frame) {
		t.Error("frame taken behind a long queue")
	}
	sess.drainQueue()
	if out := ts.batchesOut.Load(); out != 0 {
		t.Errorf("%d batches not given back", out)
	}
}

// TestSendFramesToOtherConnection: frames queued for a connection whose
// client took them, found by a sender whose channel does not, are dropped
// and counted, never sent.
func TestSendFramesToOtherConnection(t *testing.T) {
	ts := newTestServer(t, `ipv4-network = "10.77.0.0/24"
listen = "192.0.2.1:443"
`)
	sess := ts.connect(t, "alice")
	b := ts.getFrameBatch()
	b.add(tsoFrame(sess.addr.String(), 1360, 2*1360))
	before := ts.Counters.DropDetached.Load()
	if err := sess.sendFrames(nil, b.pkts[:1]); err != nil {
		t.Fatal(err)
	}
	if got := ts.Counters.DropDetached.Load() - before; got != 1 {
		t.Errorf("DropDetached grew by %d, want 1", got)
	}
	ts.putBatch(b)
}

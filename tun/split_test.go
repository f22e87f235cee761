package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// naiveSum is RFC 1071's checksum the slow, obvious way, to check sum and
// fold against.
func naiveSum(parts ...[]byte) uint16 {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var acc uint32
	for i := 0; i < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// pseudoHeader is the transport checksum's pseudo-header for pkt.
func pseudoHeader(pkt []byte, proto byte, l4len int) []byte {
	var p []byte
	if pkt[0]>>4 == 4 {
		p = append(p, pkt[12:20]...)
	} else {
		p = append(p, pkt[8:40]...)
	}
	return append(p, 0, 0, 0, proto, byte(l4len>>8), byte(l4len))
}

// superPacket builds a frame as the kernel hands one over: a virtio_net_hdr
// with NEEDS_CSUM and an IPv4 or IPv6 packet whose transport checksum holds
// only the pseudo-header sum (CHECKSUM_PARTIAL).
func superPacket(v6 bool, proto byte, gsoType byte, gsoSize int, flags byte, payload []byte) []byte {
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	l4Len := 8
	if proto == 6 {
		l4Len = 32 // with 12 bytes of options (timestamps)
	}
	pkt := make([]byte, ipLen+l4Len+len(payload))
	if v6 {
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
		pkt[6], pkt[7] = proto, 64
		copy(pkt[8:], bytes.Repeat([]byte{0xfd, 1}, 8))
		copy(pkt[24:], bytes.Repeat([]byte{0xfd, 2}, 8))
	} else {
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[4:], 0xfffe) // the ID wraps while splitting
		pkt[8], pkt[9] = 64, proto
		copy(pkt[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(pkt[10:], ^naiveSum(pkt[:20]))
	}
	l4 := pkt[ipLen:]
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], 443)
	csumOff := 6
	if proto == 6 {
		binary.BigEndian.PutUint32(l4[4:], 0xfffff000) // the sequence wraps too
		binary.BigEndian.PutUint32(l4[8:], 77)
		l4[12] = byte(l4Len/4) << 4
		l4[13] = flags
		csumOff = 16
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	copy(l4[l4Len:], payload)
	binary.BigEndian.PutUint16(l4[csumOff:], naiveSum(pseudoHeader(pkt, proto, len(l4))))
	hdr := make([]byte, VirtioHdrLen)
	hdr[0] = virtioFlagNeedsCsum
	hdr[1] = gsoType
	binary.LittleEndian.PutUint16(hdr[2:], uint16(ipLen+l4Len))
	binary.LittleEndian.PutUint16(hdr[4:], uint16(gsoSize))
	binary.LittleEndian.PutUint16(hdr[6:], uint16(ipLen))
	binary.LittleEndian.PutUint16(hdr[8:], uint16(csumOff))
	return append(hdr, pkt...)
}

func testBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+2000)
	}
	return bufs, make([]int, n)
}

func TestSplitFrameSegments(t *testing.T) {
	payload := make([]byte, 5000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name    string
		v6      bool
		proto   byte
		gsoType byte
	}{
		{"TCPv4", false, 6, gsoTCPv4},
		{"TCPv6", true, 6, gsoTCPv6},
		{"UDPv4", false, 17, gsoUDPL4},
		{"UDPv6", true, 17, gsoUDPL4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const gsoSize = 1400
			frame := superPacket(tc.v6, tc.proto, tc.gsoType, gsoSize, tcpFlagCWR|tcpFlagPSH|tcpFlagFIN|0x10, payload)
			bufs, sizes := testBufs(8)
			n, err := splitFrame(frame, bufs, sizes, Headroom)
			if err != nil || n != 4 {
				t.Fatalf("splitFrame = %d, %v; want 4 segments", n, err)
			}
			ipLen := 20
			if tc.v6 {
				ipLen = 40
			}
			var got []byte
			for i := range n {
				seg := bufs[i][Headroom : Headroom+sizes[i]]
				l4 := seg[ipLen:]
				if tc.v6 {
					if int(binary.BigEndian.Uint16(seg[4:])) != len(seg)-40 {
						t.Errorf("segment %d: payload length %d of %d bytes", i, binary.BigEndian.Uint16(seg[4:]), len(seg))
					}
				} else {
					if int(binary.BigEndian.Uint16(seg[2:])) != len(seg) || naiveSum(seg[:20]) != 0xffff {
						t.Errorf("segment %d: total length %d of %d bytes, header sum %#x", i, binary.BigEndian.Uint16(seg[2:]), len(seg), naiveSum(seg[:20]))
					}
					if id := binary.BigEndian.Uint16(seg[4:]); id != uint16(0xfffe+i) {
						t.Errorf("segment %d: IPv4 ID %#x", i, id)
					}
				}
				if s := naiveSum(pseudoHeader(seg, tc.proto, len(l4)), l4); s != 0xffff {
					t.Errorf("segment %d: transport checksum does not verify (sum %#x)", i, s)
				}
				hdr := 8
				if tc.proto == 6 {
					hdr = 32
					if seq := binary.BigEndian.Uint32(l4[4:]); seq != 0xfffff000+uint32(i*gsoSize) {
						t.Errorf("segment %d: seq %#x", i, seq)
					}
					fl := l4[13]
					last, first := i == n-1, i == 0
					if (fl&tcpFlagFIN != 0) != last || (fl&tcpFlagPSH != 0) != last || (fl&tcpFlagCWR != 0) != first || fl&0x10 == 0 {
						t.Errorf("segment %d: flags %#x", i, fl)
					}
				} else if int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
					t.Errorf("segment %d: UDP length %d of %d", i, binary.BigEndian.Uint16(l4[4:]), len(l4))
				}
				if want := min(gsoSize, len(payload)-i*gsoSize); len(l4)-hdr != want {
					t.Errorf("segment %d: %d payload bytes, want %d", i, len(l4)-hdr, want)
				}
				got = append(got, l4[hdr:]...)
			}
			if !bytes.Equal(got, payload) {
				t.Error("the segments' payloads are not the super-packet's")
			}
		})
	}
}

func TestSplitFrameNoGSO(t *testing.T) {
	// One UDP packet with its checksum left partial, and one the kernel
	// finished (no NEEDS_CSUM): both come out whole and verifying.
	frame := superPacket(false, 17, gsoNone, 0, 0, []byte("hello, small packet"))
	bufs, sizes := testBufs(1)
	if n, err := splitFrame(frame, bufs, sizes, Headroom); n != 1 || err != nil {
		t.Fatalf("splitFrame = %d, %v", n, err)
	}
	seg := bufs[0][Headroom : Headroom+sizes[0]]
	if len(seg) != len(frame)-VirtioHdrLen || naiveSum(pseudoHeader(seg, 17, len(seg)-20), seg[20:]) != 0xffff {
		t.Fatalf("packet of %d bytes, checksum does not verify", len(seg))
	}
	done := append([]byte(nil), frame...)
	done[0] = 0
	copy(done[VirtioHdrLen:], seg)
	if n, err := splitFrame(done, bufs, sizes, Headroom); n != 1 || err != nil || !bytes.Equal(bufs[0][Headroom:Headroom+sizes[0]], seg) {
		t.Fatalf("finished packet changed: %d, %v", n, err)
	}
}

func TestSplitFrameNoRoom(t *testing.T) {
	frame := superPacket(false, 6, gsoTCPv4, 1000, 0x10, make([]byte, 3500))
	bufs, sizes := testBufs(3)
	if n, err := splitFrame(frame, bufs, sizes, Headroom); n != 0 || !errors.Is(err, errNoRoom) {
		t.Fatalf("4 segments into 3 buffers: %d, %v; want errNoRoom", n, err)
	}
	for i := range bufs {
		if sizes[i] != 0 || !bytes.Equal(bufs[i], make([]byte, len(bufs[i]))) {
			t.Fatalf("buffer %d written although the frame did not fit", i)
		}
	}
}

func TestSplitFrameRefuses(t *testing.T) {
	good := superPacket(false, 6, gsoTCPv4, 1000, 0x10, make([]byte, 3000))
	mangle := func(f func(b []byte)) []byte { b := append([]byte(nil), good...); f(b); return b }
	for name, frame := range map[string][]byte{
		"short":             good[:25],
		"GSO type for IPv6": mangle(func(b []byte) { b[1] = gsoTCPv6 }),
		"unknown GSO type":  mangle(func(b []byte) { b[1] = 9 }),
		"gso_size 0":        mangle(func(b []byte) { b[4], b[5] = 0, 0 }),
		"csum_start 8":      mangle(func(b []byte) { b[6], b[7] = 8, 0 }),
		"csum_start at end": mangle(func(b []byte) { binary.LittleEndian.PutUint16(b[6:], uint16(len(b))) }),
		"TCP header 8":      mangle(func(b []byte) { b[VirtioHdrLen+20+12] = 0x20 }),
		"segment too big":   mangle(func(b []byte) { binary.LittleEndian.PutUint16(b[4:], 3000) }),
		"checksum past end": mangle(func(b []byte) { b[1] = gsoNone; binary.LittleEndian.PutUint16(b[8:], 60000) }),
	} {
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, Headroom+1500)
		}
		if n, err := splitFrame(frame, bufs, make([]int, 8), Headroom); !errors.Is(err, errBadFrame) {
			t.Errorf("%s: splitFrame = %d, %v; want errBadFrame", name, n, err)
		}
	}
}

func TestChecksumSum(t *testing.T) {
	b := make([]byte, 301)
	for i := range b {
		b[i] = byte(i*31 + 5)
	}
	for n := range len(b) {
		if got, want := fold(sum(b[:n], 0)), naiveSum(b[:n]); got != want {
			t.Fatalf("%d bytes: sum %#x, want %#x", n, got, want)
		}
	}
}

func TestSplitFrameAllocs(t *testing.T) {
	frame := superPacket(false, 6, gsoTCPv4, 1400, 0x10, make([]byte, 60000))
	bufs, sizes := testBufs(64)
	if a := testing.AllocsPerRun(100, func() { splitFrame(frame, bufs, sizes, Headroom) }); a != 0 {
		t.Fatalf("%v allocations per split", a)
	}
}

// FuzzSplitFrame feeds arbitrary frames: splitFrame must not panic, and
// every segment it returns must fit its buffer and, for IPv4, carry a valid
// header checksum.
func FuzzSplitFrame(f *testing.F) {
	f.Add(superPacket(false, 6, gsoTCPv4, 1000, 0x19, make([]byte, 2500)))
	f.Add(superPacket(true, 17, gsoUDPL4, 100, 0, make([]byte, 450)))
	f.Add(superPacket(false, 17, gsoNone, 0, 0, []byte("x")))
	f.Fuzz(func(t *testing.T, frame []byte) {
		bufs := make([][]byte, 16)
		for i := range bufs {
			bufs[i] = make([]byte, Headroom+1500)
		}
		sizes := make([]int, 16)
		n, err := splitFrame(frame, bufs, sizes, Headroom)
		if err != nil && n != 0 {
			t.Fatalf("%d packets with error %v", n, err)
		}
		for i := range n {
			if sizes[i] > 1500 || sizes[i] < 20 {
				t.Fatalf("packet %d of %d bytes", i, sizes[i])
			}
			seg := bufs[i][Headroom : Headroom+sizes[i]]
			if frame[1]&^gsoECN != gsoNone && seg[0]>>4 == 4 && naiveSum(seg[:int(seg[0]&15)*4]) != 0xffff {
				t.Fatalf("segment %d: bad IPv4 header checksum", i)
			}
		}
	})
}

// Package sealtest is the contract every record engine keeps: a
// record.Sealer and record.Opener pair of each suite of ktlsbridge's TLS
// engine and of the DTLS record layer runs through Run, so the engines are
// one shape by test and not only by type.
package sealtest

import (
	"bytes"
	"testing"
	"unsafe"

	"kvpn/internal/race"
	"kvpn/record"
)

// Pair returns a fresh Sealer and the Opener of the other end, both at the
// start of their sequence.
type Pair func(tb testing.TB) (record.Sealer, record.Opener)

// canary fills the bytes around the room a record may use, to show Seal
// writes nowhere else.
const canary = 0xa5

// guard is how many canary bytes surround the room on each side.
const guard = 32

// sizes are the plaintext lengths sealed: empty, a TCP ACK, a full packet
// of the usual MTU, and the largest record.
var sizes = []int{0, 1, 40, 1400, record.MaxRecordPayload}

// Run checks newPair's engine: records round-trip in place and stay within
// Headroom and Tailroom; a record is accepted once, and a tampered or
// truncated one is refused; Seal refuses missing room or an oversized
// plaintext without writing; a seal and open cost no allocation.
func Run(t *testing.T, newPair Pair) {
	t.Run("round trip in place", func(t *testing.T) { roundTrip(t, newPair) })
	t.Run("accepted once", func(t *testing.T) { acceptedOnce(t, newPair) })
	t.Run("tampered or truncated", func(t *testing.T) { refused(t, newPair) })
	t.Run("room", func(t *testing.T) { room(t, newPair) })
	t.Run("no allocations", func(t *testing.T) { noAllocs(t, newPair) })
}

// frame is a buffer with the room for an n-byte plaintext and canary
// bytes around it; the plaintext starts at off.
func frame(se record.Sealer, n int) (buf []byte, off int) {
	buf = bytes.Repeat([]byte{canary}, guard+se.Headroom()+n+se.Tailroom()+guard)
	off = guard + se.Headroom()
	for i := range n {
		buf[off+i] = byte(i*7 + 3)
	}
	return buf, off
}

// within reports whether sub lies inside buf[lo:hi].
func within(sub, buf []byte, lo, hi int) bool {
	if len(sub) == 0 {
		return true
	}
	start := int(uintptr(unsafe.Pointer(&sub[0])) - uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
	return start >= lo && start+len(sub) <= hi
}

func roundTrip(t *testing.T, newPair Pair) {
	se, op := newPair(t)
	for _, n := range sizes {
		buf, off := frame(se, n)
		want := bytes.Clone(buf[off : off+n])
		lo, hi := off-se.Headroom(), off+n+se.Tailroom()
		rec, err := se.Seal(buf, off, n, record.ApplicationData)
		if err != nil {
			t.Fatalf("%d bytes: Seal: %v", n, err)
		}
		if !within(rec, buf, lo, hi) {
			t.Fatalf("%d bytes: the record is not in the room in front of and behind the plaintext", n)
		}
		for i, b := range buf {
			if (i < lo || i >= hi) && b != canary {
				t.Fatalf("%d bytes: Seal wrote byte %d, outside its room [%d, %d)", n, i, lo, hi)
			}
		}
		if n >= 16 && bytes.Contains(rec, want) {
			t.Fatalf("%d bytes: the plaintext is in the record in clear", n)
		}
		in := bytes.Clone(rec) // as it arrives
		ct, pt, err := op.Open(in)
		if err != nil {
			t.Fatalf("%d bytes: Open: %v", n, err)
		}
		if ct != record.ApplicationData || !bytes.Equal(pt, want) {
			t.Fatalf("%d bytes: Open gave %v with %d bytes, want application_data with the plaintext", n, ct, len(pt))
		}
		if !within(pt, in, 0, len(in)) {
			t.Fatalf("%d bytes: the plaintext is not decrypted in place", n)
		}
	}
}

func acceptedOnce(t *testing.T, newPair Pair) {
	se, op := newPair(t)
	buf, off := frame(se, 100)
	rec, err := se.Seal(buf, off, 100, record.ApplicationData)
	if err != nil {
		t.Fatal(err)
	}
	first, again := bytes.Clone(rec), bytes.Clone(rec)
	if _, _, err := op.Open(first); err != nil {
		t.Fatalf("first copy: %v", err)
	}
	if _, _, err := op.Open(again); err == nil {
		t.Fatal("a record was accepted twice")
	}
}

func refused(t *testing.T, newPair Pair) {
	se, _ := newPair(t)
	buf, off := frame(se, 64)
	rec, err := se.Seal(buf, off, 64, record.ApplicationData)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rec {
		_, op := newPair(t)
		bad := bytes.Clone(rec)
		bad[i] ^= 0x10
		if _, _, err := op.Open(bad); err == nil {
			t.Fatalf("a record with byte %d of %d flipped was accepted", i, len(rec))
		}
	}
	for n := range len(rec) {
		_, op := newPair(t)
		if _, _, err := op.Open(bytes.Clone(rec[:n])); err == nil {
			t.Fatalf("a record cut to %d of %d bytes was accepted", n, len(rec))
		}
	}
}

func room(t *testing.T, newPair Pair) {
	se, _ := newPair(t)
	for _, tc := range []struct {
		name      string
		n, off    int
		size      int // len(buf)
		wantWrite bool
	}{
		{name: "headroom one short", n: 64, off: se.Headroom() - 1, size: se.Headroom() - 1 + 64 + se.Tailroom()},
		{name: "tailroom one short", n: 64, off: se.Headroom(), size: se.Headroom() + 64 + se.Tailroom() - 1},
		{name: "plaintext over a record", n: record.MaxRecordPayload + 1, off: se.Headroom(), size: se.Headroom() + record.MaxRecordPayload + 1 + se.Tailroom()},
	} {
		buf := bytes.Repeat([]byte{canary}, tc.size)
		if _, err := se.Seal(buf, tc.off, tc.n, record.ApplicationData); err == nil {
			t.Errorf("%s: Seal accepted it", tc.name)
		}
		if !bytes.Equal(buf, bytes.Repeat([]byte{canary}, tc.size)) {
			t.Errorf("%s: Seal wrote before failing", tc.name)
		}
	}
}

func noAllocs(t *testing.T, newPair Pair) {
	se, op := newPair(t)
	buf, off := frame(se, 1400)
	in := make([]byte, len(buf))
	var failed error
	allocs := testing.AllocsPerRun(100, func() {
		rec, err := se.Seal(buf, off, 1400, record.ApplicationData)
		if err == nil {
			_, _, err = op.Open(in[:copy(in, rec)])
		}
		if err != nil && failed == nil {
			failed = err
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if race.Enabled {
		t.Log("allocation count not checked: the race detector allocates on its own")
		return
	}
	if allocs != 0 {
		t.Errorf("a seal and open cost %.1f allocations, want 0", allocs)
	}
}

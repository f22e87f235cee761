package recordlayer

import (
	"encoding/binary"
	"testing"
)

// NewReplayWindow returns a window covering at least bits sequence numbers
// (at least MinWindow), rounded up to the ring's granularity; Size tells the
// result. Nothing has been seen yet: every number from 0 up is new.
func NewReplayWindow(bits int) *ReplayWindow {
	w := &ReplayWindow{}
	w.init(bits)
	return w
}

func TestReplayWindowSize(t *testing.T) {
	for _, tc := range []struct{ bits, size int }{
		{0, 1984}, {1, 1984}, {1024, 1984}, {1984, 1984}, {1985, 4032}, {8128, 8128}, {8129, 16320},
	} {
		if got := NewReplayWindow(tc.bits).Size(); got != tc.size {
			t.Errorf("NewReplayWindow(%d).Size() = %d, want %d", tc.bits, got, tc.size)
		}
	}
}

// accept is Check then Accept, as Opener does.
func accept(w *ReplayWindow, seq uint64) bool {
	if !w.Check(seq) {
		return false
	}
	w.Accept(seq)
	return true
}

func TestReplayWindowBasics(t *testing.T) {
	w := NewReplayWindow(1024)
	size := uint64(w.Size())
	// Seq 0 is new at first, then seen.
	if !accept(w, 0) || accept(w, 0) {
		t.Fatal("seq 0")
	}
	// Check does not change anything.
	if !w.Check(5) || !w.Check(5) {
		t.Fatal("Check changed state")
	}
	for _, s := range []uint64{2, 1, 3, 64, 63, 65, 127, 128} {
		if !accept(w, s) {
			t.Fatalf("%d refused", s)
		}
	}
	for _, s := range []uint64{0, 1, 2, 3, 63, 64, 65, 127, 128} {
		if w.Check(s) {
			t.Fatalf("%d accepted twice", s)
		}
	}
	for _, s := range []uint64{4, 62, 66, 126} {
		if !w.Check(s) {
			t.Fatalf("unseen %d refused", s)
		}
	}
	// The exact edge of the window.
	top := uint64(10000)
	accept(w, top)
	if w.Check(top - size) {
		t.Fatal("seq exactly Size below the newest is inside")
	}
	if !w.Check(top - size + 1) {
		t.Fatal("oldest seq in the window refused")
	}
	// Everything in the window that was never accepted is still new, and
	// nothing from before the slide leaks through as "seen" or "new".
	for s := top - size + 1; s < top; s++ {
		if !w.Check(s) {
			t.Fatalf("seq %d refused after the slide", s)
		}
	}
}

// TestReplayWindowRingWrap slides the window one record at a time across
// many turns of the ring, with stragglers, so every word gets reused.
func TestReplayWindowRingWrap(t *testing.T) {
	w := NewReplayWindow(1024)
	size := uint64(w.Size())
	ringBits := uint64(len(w.ring) * 64)
	for s := uint64(0); s < 10*ringBits; s += 3 {
		if !accept(w, s) {
			t.Fatalf("%d refused", s)
		}
		// A straggler from just inside the window.
		if s > size && s%7 == 0 {
			late := s - size + 2
			if late%3 != 0 && !accept(w, late) {
				t.Fatalf("straggler %d refused at %d", late, s)
			}
			if accept(w, late) {
				t.Fatalf("straggler %d accepted twice", late)
			}
		}
		// The one just past the window is old.
		if s >= size && w.Check(s-size) {
			t.Fatalf("%d accepted at %d", s-size, s)
		}
	}
}

func TestReplayWindowJumps(t *testing.T) {
	w := NewReplayWindow(1024)
	size := uint64(w.Size())
	for i := uint64(0); i < 200; i++ {
		accept(w, i)
	}
	// A jump of more than a whole ring clears everything.
	j := uint64(1) << 40
	if !accept(w, j) {
		t.Fatal("jump refused")
	}
	for s := j - size + 1; s < j; s++ {
		if !w.Check(s) {
			t.Fatalf("%d refused after a big jump", s)
		}
	}
	if w.Check(199) || w.Check(j) {
		t.Fatal("old or duplicate accepted")
	}
	// Jumps of exactly one ring and of less than one.
	ring := uint64(len(w.ring) * 64)
	for _, d := range []uint64{ring, ring - 1, ring + 1, 64, 65, 1} {
		j += d
		if !accept(w, j) {
			t.Fatalf("jump by %d refused", d)
		}
		if w.Check(j) || !w.Check(j-1) && d > 1 {
			t.Fatalf("state after jump by %d", d)
		}
	}
}

func TestReplayWindowLimits(t *testing.T) {
	w := NewReplayWindow(1024)
	if !accept(w, MaxSeq) {
		t.Fatal("2^48-1 refused")
	}
	if accept(w, MaxSeq) {
		t.Fatal("2^48-1 twice")
	}
	if w.Check(MaxSeq+1) || w.Check(1<<63) || w.Check(^uint64(0)) {
		t.Fatal("beyond 48 bits accepted")
	}
	w.Accept(^uint64(0)) // ignored
	if !w.Check(MaxSeq - 1) {
		t.Fatal("MaxSeq-1 refused")
	}
	if w.Check(0) {
		t.Fatal("0 accepted far below the window")
	}

	// Reset: below the floor is seen, the floor itself is new.
	w.Reset(1000)
	if w.Check(999) || w.Check(0) || !w.Check(1000) || !w.Check(1001) {
		t.Fatal("Reset(1000)")
	}
	if !accept(w, 1001) || !accept(w, 1000) || accept(w, 1000) {
		t.Fatal("after Reset")
	}
	w.Accept(5) // below the floor: ignored
	if w.Check(5) {
		t.Fatal("below floor")
	}
}

// FuzzReplayWindow feeds sequences of numbers to the window and to a map
// model of RFC 6347 section 4.1.2.6: a number is new if it was never
// accepted and is less than Size below the newest accepted one.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, uint16(0))
	f.Add(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 5000), 3), uint16(100))
	f.Add(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, MaxSeq), 1<<63), uint16(7))
	f.Fuzz(func(t *testing.T, data []byte, floor uint16) {
		w := NewReplayWindow(1024)
		size := uint64(w.Size())
		w.Reset(uint64(floor))
		seen := map[uint64]bool{}
		last := uint64(floor)
		var prev uint64
		for len(data) >= 2 {
			// Mostly small steps around the current position, sometimes
			// absolute numbers, so that both reordering and jumps occur.
			var seq uint64
			if data[0]&0x80 != 0 && len(data) >= 8 {
				seq = binary.BigEndian.Uint64(data[:8])
				if data[1]&1 == 0 {
					seq &= MaxSeq
				}
				data = data[8:]
			} else {
				d := uint64(binary.BigEndian.Uint16(data[:2]) & 0x7fff)
				if data[1]&1 == 0 {
					seq = prev + d
				} else {
					seq = prev - min(prev, d)
				}
				data = data[2:]
			}
			want := seq <= MaxSeq && seq >= uint64(floor) && !seen[seq] && (seq > last || last-seq < size)
			if got := w.Check(seq); got != want {
				t.Fatalf("Check(%d) = %v, model %v (newest %d, size %d)", seq, got, want, last, size)
			}
			if want {
				w.Accept(seq)
				seen[seq] = true
				last = max(last, seq)
				if w.Check(seq) {
					t.Fatalf("%d new again right after Accept", seq)
				}
			}
			prev = seq
		}
	})
}

package recordlayer

import "math/bits"

// MinWindow is the smallest replay window NewOpener builds, in records.
// RFC 6347 section 4.1.2.6 asks for at least 32 and suggests 64; a VPN sending a few hundred thousand packets a second over
// paths that reorder (multiple queues, ECMP) needs more, and WireGuard uses
// 8128 for the same reason.
const MinWindow = 1024

// ReplayWindow is the sliding window of RFC 6347 section 4.1.2.6 over 48-bit
// sequence numbers, kept as in RFC 6479: a ring of 64-bit words indexed by
// seq/64, of which only the word being slid into is cleared when the window
// moves forward, so advancing costs nothing per bit. With n words the ring
// guarantees (n-1)*64 records of history (the newest word may be only
// partly used).
//
// Check answers without changing anything; Accept records a number, and is
// called only after the record's tag verified, so forged records cannot move
// the window (RFC 6347 section 4.1.2.6: "the receive window is updated only
// if the MAC verification succeeds"). ReplayWindow has no lock; Opener
// holds one around it.
type ReplayWindow struct {
	last  uint64 // highest accepted (or floor, before any)
	floor uint64 // nothing below is new (Reset)
	span  uint64 // guaranteed history: (len(ring)-1)*64
	mask  uint64 // len(ring)-1; len(ring) is a power of two
	ring  []uint64
}

func (w *ReplayWindow) init(n int) {
	if n < MinWindow {
		n = MinWindow
	}
	if n > 1<<24 {
		n = 1 << 24 // 2 MiB of bitmap is more history than any path reorders
	}
	words := (n+63)/64 + 1 // +1: the word being slid into is only partly history
	words = 1 << bits.Len(uint(words-1))
	w.ring = make([]uint64, words)
	w.mask = uint64(words - 1)
	w.span = uint64(words-1) * 64
	w.last, w.floor = 0, 0
}

// Size is the number of most recent sequence numbers the window remembers:
// a number at least Size below the highest accepted one is refused as too
// old.
func (w *ReplayWindow) Size() int { return int(w.span) }

// Reset forgets everything and treats next as the lowest new number: what
// is below it counts as seen. Opener starts its window at the peer's
// sequence number as pion left it, so records pion already consumed cannot
// be replayed into the data channel.
func (w *ReplayWindow) Reset(next uint64) {
	clear(w.ring)
	w.floor, w.last = next, next
}

// Check reports whether seq is new: not accepted before, not below the
// window, and within 48 bits. It does not change the window.
func (w *ReplayWindow) Check(seq uint64) bool {
	return w.check(seq) == nil
}

// check is Check with the reason for a refusal.
func (w *ReplayWindow) check(seq uint64) error {
	switch {
	case seq > MaxSeq || seq < w.floor:
		return errTooOld
	case seq > w.last:
		return nil // ahead of everything: new
	case w.last-seq >= w.span:
		return errTooOld
	case w.ring[(seq>>6)&w.mask]&(1<<(seq&63)) != 0:
		return errDuplicate
	}
	return nil
}

// Accept records seq as seen, sliding the window forward if seq is the
// newest. Call it only for a seq that Check accepted (and whose record
// verified); a seq that is out of range or too old is ignored.
func (w *ReplayWindow) Accept(seq uint64) {
	if seq > MaxSeq || seq < w.floor {
		return
	}
	if seq > w.last {
		// Clear the words between the old newest word (exclusive) and the
		// new one (inclusive): they now stand for numbers never seen. A
		// jump of a whole ring or more clears all of it.
		cur, next := w.last>>6, seq>>6
		n := next - cur
		if n > uint64(len(w.ring)) {
			n = uint64(len(w.ring))
		}
		for i := uint64(1); i <= n; i++ {
			w.ring[(cur+i)&w.mask] = 0
		}
		w.last = seq
	} else if w.last-seq >= w.span {
		return
	}
	w.ring[(seq>>6)&w.mask] |= 1 << (seq & 63)
}

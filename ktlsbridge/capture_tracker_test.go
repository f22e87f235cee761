package ktlsbridge

import (
	"testing"
)

// TestRecordTracker: records split at every point of the stream are
// followed, reads are limited to the current record, and the hello random
// is found in a handshake message split across records.
func TestRecordTracker(t *testing.T) {
	var random [32]byte
	for i := range random {
		random[i] = byte(i + 1)
	}
	// A HelloRetryRequest, then a ServerHello split over two records, then
	// a ChangeCipherSpec and an encrypted record.
	msg := func(typ uint8, r [32]byte, extra int) []byte {
		body := append([]byte{3, 3}, r[:]...)
		body = append(body, make([]byte, extra)...)
		return append([]byte{typ, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	rec := func(typ uint8, body []byte) []byte {
		return append([]byte{typ, 3, 3, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	hrr := msg(msgServerHello, helloRetryRandom, 10)
	sh := msg(msgServerHello, random, 40)
	var stream []byte
	stream = append(stream, rec(contentHandshake, hrr)...)
	stream = append(stream, rec(contentHandshake, sh[:20])...)
	stream = append(stream, rec(contentHandshake, sh[20:])...)
	stream = append(stream, rec(contentChangeCipherSpec, []byte{1})...)
	stream = append(stream, rec(contentApplicationData, make([]byte, 30))...)
	stream = append(stream, rec(contentHandshake, nil)...)

	for chunk := 1; chunk <= len(stream); chunk++ {
		var tr recordTracker
		tr.hello.want = msgServerHello
		records := 0
		for off := 0; off < len(stream); {
			n := min(chunk, len(stream)-off, tr.limit())
			tr.feed(stream[off : off+n])
			off += n
			if !tr.partial() {
				records++
			}
		}
		if tr.partial() || !tr.hello.found || tr.hello.random != random || tr.afterCCS != 2 {
			t.Fatalf("chunk %d: partial %v found %v random %x afterCCS %d", chunk, tr.partial(), tr.hello.found, tr.hello.random, tr.afterCCS)
		}
		if chunk == len(stream) && records != 6 {
			t.Fatalf("%d record ends seen reading with the limit, want 6", records)
		}
	}
}

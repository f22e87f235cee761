package recordlayer

import (
	"bytes"
	"errors"
	"sync"
	"testing"
)

// TestConcurrent: many goroutines seal with one Sealer and open with one
// Opener; every record opens exactly once and sequence numbers are unique.
func TestConcurrent(t *testing.T) {
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) {
			se, op := pair(t, s, 0)
			const workers, per = 4, 500
			recs := make(chan []byte, workers*per)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						msg := payload(64, byte(w*per+i))
						buf := make([]byte, 64+s.Overhead())
						copy(buf[s.Headroom():], msg)
						rec, err := se.Seal(buf, s.Headroom(), 64, ApplicationData)
						if err != nil {
							t.Error(err)
							return
						}
						recs <- rec
					}
				}()
			}
			wg.Wait()
			close(recs)
			var all [][]byte
			for r := range recs {
				all = append(all, r, bytes.Clone(r)) // each twice
			}
			var mu sync.Mutex
			seen := map[uint64]int{}
			work := make(chan []byte)
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for rec := range work {
						_, _, seq, _, _ := ParseHeader(rec)
						_, _, err := op.Open(rec)
						if err != nil && !errors.Is(err, ErrReplay) {
							t.Error(err)
						}
						if err == nil {
							mu.Lock()
							seen[seq]++
							mu.Unlock()
						}
					}
				}()
			}
			for _, r := range all {
				work <- r
			}
			close(work)
			wg.Wait()
			if len(seen) != workers*per {
				t.Fatalf("%d distinct records opened, want %d", len(seen), workers*per)
			}
			for seq, n := range seen {
				if n != 1 || seq >= workers*per {
					t.Fatalf("seq %d opened %d times", seq, n)
				}
			}
		})
	}
}

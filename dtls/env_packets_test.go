package dtls

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"kvpn/dtls/recordlayer"
)

// ipv4Packet returns a packet of size bytes (at least 20) that passes
// testOwner.Check, filled from rng.
func ipv4Packet(rng *rand.Rand, size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	p[0] = 0x45
	p[2], p[3] = byte(size>>8), byte(size)
	return p
}

func randomPackets(rng *rand.Rand, n int) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = ipv4Packet(rng, 20+rng.IntN(1400-20+1))
	}
	return pkts
}

// withRoom copies pkts into buffers with room bytes of headroom and the
// tailroom a record needs in their capacity.
func withRoom(pkts [][]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, room+len(p), room+len(p)+tail)
		copy(b[room:], p)
		bufs[i] = b
	}
	return bufs
}

// clientSend sends pkts from c and waits until the server's TUN has them;
// it returns what the TUN got (and forgets it).
func clientSend(t testing.TB, s *testServer, c *ClientChannel, pkts [][]byte) [][]byte {
	t.Helper()
	before := s.tun.count()
	if err := c.WritePackets(withRoom(pkts), room); err != nil {
		t.Fatalf("client WritePackets: %v", err)
	}
	waitFor(t, fmt.Sprintf("%d packets at the TUN", len(pkts)), func() bool { return s.tun.count() >= before+len(pkts) })
	return s.tun.take()[before:]
}

// clientRead reads until n packets arrived at c (or 5 s passed) and
// returns copies of them.
func clientRead(t testing.TB, c *ClientChannel, n int) [][]byte {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, room+2048)
	}
	sizes := make([]int, len(bufs))
	var got [][]byte
	for len(got) < n {
		k, err := c.ReadPackets(bufs, sizes, room)
		for i := range k {
			got = append(got, bytes.Clone(bufs[i][room:room+sizes[i]]))
		}
		if err != nil {
			t.Fatalf("client ReadPackets after %d of %d packets: %v", len(got), n, err)
		}
	}
	return got
}

// clientReadOnce makes one ReadPackets call with a deadline d away and
// returns its packets and error.
func clientReadOnce(c *ClientChannel, d time.Duration) ([][]byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, room+2048)
	}
	sizes := make([]int, len(bufs))
	k, err := c.ReadPackets(bufs, sizes, room)
	var got [][]byte
	for i := range k {
		got = append(got, bytes.Clone(bufs[i][room:room+sizes[i]]))
	}
	return got, err
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func samePackets(t testing.TB, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d packets, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: packet %d differs: %d bytes %x..., want %d bytes %x...",
				what, i, len(got[i]), got[i][:min(16, len(got[i]))], len(want[i]), want[i][:min(16, len(want[i]))])
		}
	}
}

// sealAlert seals an alert record (level, description) with d's keys, as
// the peer's record layer would send it.
func sealAlert(t testing.TB, d *datapath, level, desc byte) []byte {
	t.Helper()
	d.cmu.Lock()
	defer d.cmu.Unlock()
	off := d.sealer.Headroom()
	buf := make([]byte, off+2+Tailroom)
	buf[off], buf[off+1] = level, desc
	rec, err := d.sealer.Seal(buf, off, 2, recordlayer.Alert)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

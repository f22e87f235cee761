package dtls

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestClientCIDLengths: a modified client asks for a connection ID of its
// own length (RFC 9146 lets each side choose the CID it receives, 0 to
// 255 bytes), so the records the server sends carry a CID of that length
// while those it receives carry the server's (CIDLen). The server must
// place received packets by its own CID, hand the TUN exactly the bytes
// Check approved, and never panic; a CID too long for the session's
// headroom is refused at the handshake. Both suites, plain and roaming
// (the copying path of receiveCID).
func TestClientCIDLengths(t *testing.T) {
	defer func(n int) { dialCIDLen = n }(dialCIDLen)
	for _, chacha := range []bool{false, true} {
		for _, n := range []int{0, 1, 7, 8, 9, 255} {
			t.Run(fmt.Sprintf("%s/cid%d", suiteName(chacha), n), func(t *testing.T) {
				dialCIDLen = n
				s := newTestServer(t, chacha)
				s.cid.Store(true)
				r := newRelay(t, s.addr)
				if n > CIDLen {
					_, err := Dial(context.Background(), ClientConfig{
						Server: r.Addr(), AppID: s.appID, PSK: s.psk, Timeout: time.Second, ChaCha: chacha, CID: true,
					})
					waitFor(t, "the handshake to fail", func() bool { return s.l.Counters.HandshakeFailed.Load() == 1 })
					if s.owner.ups() != 0 {
						t.Fatalf("a client CID of %d bytes was accepted (Dial: %v)", n, err)
					}
					return
				}
				c, p := s.connect(t, r.Addr())
				if got := len(p.d.Load().keys.LocalCID); got != n {
					t.Fatalf("server's LocalCID has %d bytes, want %d", got, n)
				}
				rng := rand.New(rand.NewPCG(uint64(n), 40))
				pkts := randomPackets(rng, 8)
				samePackets(t, "client to server", clientSend(t, s, c, pkts), pkts)
				if err := p.WritePackets(withRoom(pkts), room); err != nil {
					t.Fatalf("server WritePackets: %v", err)
				}
				samePackets(t, "server to client", clientRead(t, c, len(pkts)), pkts)
				r.Rebind() // the next record roams by CID (receiveCID)
				samePackets(t, "client to server after roaming", clientSend(t, s, c, pkts), pkts)
				if p.Addr() != r.UpAddr() {
					t.Errorf("peer at %v, want %v", p.Addr(), r.UpAddr())
				}
			})
		}
	}
}

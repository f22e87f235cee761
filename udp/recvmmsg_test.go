package udp

import (
	"bytes"
	"kvpn/internal/testenv"
	"net"
	"testing"
	"time"

	"kvpn/internal/race"
)

// TestReadBatchAddrsAndAllocs reads datagrams from two senders on IPv4 and
// on IPv6 loopback: every datagram arrives with its own sender's address
// and content, and a read of a full batch allocates nothing.
func TestReadBatchAddrsAndAllocs(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			rc, err := Listen(tc.addr)
			if err != nil {
				testenv.Unavailable(t, tc.network+" loopback", err)
			}
			defer rc.Close()
			dst := rc.LocalAddr().(*net.UDPAddr)
			var senders [2]*net.UDPConn
			for i := range senders {
				if senders[i], err = net.DialUDP(tc.network, nil, dst); err != nil {
					t.Fatal(err)
				}
				defer senders[i].Close()
			}
			msgs := make([]Message, 8)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 2048)}
				msgs[i].OOB = make([]byte, OOBSize)
			}
			var payloads [8][]byte
			for i := range payloads {
				payloads[i] = bytes.Repeat([]byte{byte(i)}, 100+i)
			}
			send := func() {
				for i := range 8 {
					s := senders[i%2]
					if _, err := s.Write(payloads[i]); err != nil {
						t.Fatal(err)
					}
				}
			}
			read := func() {
				got := 0
				rc.SetReadDeadline(time.Now().Add(2 * time.Second))
				for got < 8 {
					n, err := rc.ReadBatch(msgs[got:])
					if err != nil {
						t.Fatalf("after %d: %v", got, err)
					}
					for _, m := range msgs[got : got+n] {
						i := m.Buffers[0][0]
						if m.N != 100+int(i) || bytes.Count(m.Buffers[0][:m.N], []byte{i}) != m.N {
							t.Fatalf("datagram %d: %d bytes %x", i, m.N, m.Buffers[0][:min(m.N, 4)])
						}
						want := senders[i%2].LocalAddr().(*net.UDPAddr).AddrPort()
						if ua, ok := m.Addr.(*net.UDPAddr); !ok || ua.AddrPort() != want {
							t.Fatalf("datagram %d from %v, want %v", i, m.Addr, want)
						}
					}
					got += n
				}
			}
			send()
			read()
			if race.Enabled {
				return
			}
			sendAllocs := testing.AllocsPerRun(20, send)
			read()
			for range 20 {
				send()
			}
			readAllocs := testing.AllocsPerRun(20, read)
			if readAllocs != 0 {
				t.Errorf("%v allocations per 8 datagrams read (sending: %v)", readAllocs, sendAllocs)
			}
		})
	}
}

package dtls

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
	"kvpn/udp"
)

// fuzzKeys returns the server's keys of an established association and the
// client's mirror image of them.
func fuzzKeys(chacha bool) (server, client recordlayer.Keys) {
	suite, keyLen, ivLen := recordlayer.TLS_PSK_WITH_AES_128_GCM_SHA256, 16, 4
	if chacha {
		suite, keyLen, ivLen = recordlayer.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, 32, 12
	}
	ck, civ := bytes.Repeat([]byte{1}, keyLen), bytes.Repeat([]byte{2}, ivLen)
	sk, siv := bytes.Repeat([]byte{3}, keyLen), bytes.Repeat([]byte{4}, ivLen)
	server = recordlayer.Keys{Suite: suite, Epoch: 1, LocalKey: sk, LocalIV: siv, RemoteKey: ck, RemoteIV: civ, LocalSeq: 1, RemoteSeq: 1}
	client = recordlayer.Keys{Suite: suite, Epoch: 1, LocalKey: ck, LocalIV: civ, RemoteKey: sk, RemoteIV: siv, LocalSeq: 1, RemoteSeq: 1}
	return server, client
}

// sealFrom seals one CSTP-typed payload with s as the client would.
func sealFrom(tb testing.TB, s *recordlayer.Sealer, t cstp.FrameType, payload []byte) []byte {
	tb.Helper()
	hr := s.Headroom() + 1
	buf := make([]byte, hr+len(payload)+Tailroom)
	buf[hr-1] = byte(t)
	copy(buf[hr:], payload)
	rec, err := s.Seal(buf, hr-1, len(payload)+1, recordlayer.ApplicationData)
	if err != nil {
		tb.Fatal(err)
	}
	return rec
}

// FuzzListenerHandle feeds arbitrary datagrams into Listener.handle, from
// the address of an established peer (A) and from an unknown one (B), with
// a Finder that knows one App-ID. It must never panic, and whatever it
// hands the TUN device has the TUN headroom in front and passed
// Owner.Check.
func FuzzListenerHandle(f *testing.F) {
	conn, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	appID := bytes.Repeat([]byte{0xa5}, AppIDLen)
	psk := bytes.Repeat([]byte{0x5a}, PSKLen)
	// A and B are ports nobody listens on: the peer's answers (DPD-RESP,
	// handshake flights) go nowhere.
	addrA := netip.MustParseAddrPort("127.0.0.1:9")
	addrB := netip.MustParseAddrPort("127.0.0.1:7")

	ip := make([]byte, 40)
	ip[0] = 0x45
	for _, chacha := range []bool{false, true} {
		_, ck := fuzzKeys(chacha)
		s, err := recordlayer.NewSealer(ck, ck.SealerStart())
		if err != nil {
			f.Fatal(err)
		}
		data := sealFrom(f, s, cstp.TypeData, ip)
		two := append(sealFrom(f, s, cstp.TypeData, ip), sealFrom(f, s, cstp.TypeData, ip)...)
		dpd := sealFrom(f, s, cstp.TypeDPDReq, []byte("probe"))
		bye := sealFrom(f, s, cstp.TypeDisconnect, nil)
		notIP := sealFrom(f, s, cstp.TypeData, []byte{0x60, 1, 2, 3})
		ka := sealFrom(f, s, cstp.TypeKeepalive, nil)
		empty := func() []byte {
			buf := make([]byte, s.Headroom()+Tailroom)
			rec, _ := s.Seal(buf, s.Headroom(), 0, recordlayer.ApplicationData)
			return rec
		}()
		alert := func() []byte {
			buf := make([]byte, s.Headroom()+2+Tailroom)
			buf[s.Headroom()], buf[s.Headroom()+1] = 2, 10
			rec, _ := s.Seal(buf, s.Headroom(), 2, recordlayer.Alert)
			return rec
		}()
		for _, fromB := range []bool{false, true} {
			f.Add(chacha, fromB, data, two)
			f.Add(chacha, fromB, dpd, data)
			f.Add(chacha, fromB, data, data)
			f.Add(chacha, fromB, bye, data)
			f.Add(chacha, fromB, notIP, ka)
			f.Add(chacha, fromB, empty, alert)
			f.Add(chacha, fromB, append(bytes.Clone(data), 23, 0xfe), dpd)
		}
	}
	f.Add(false, false, clientHello(appID), []byte{22})
	f.Add(false, true, clientHello(appID), clientHello(appID))
	f.Add(false, true, clientHello(make([]byte, AppIDLen)), []byte{})
	f.Add(false, false, []byte{20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1}, []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add(true, true, []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0xff, 0xff}, []byte{23})

	f.Fuzz(func(t *testing.T, chacha, fromB bool, dg1, dg2 []byte) {
		owner := &testOwner{}
		l := NewListener(ListenerConfig{
			Conn: conn, Sink: &tunRecorder{}, Log: quietLog(),
			Find: func(id []byte) (Match, bool) {
				if !bytes.Equal(id, appID) {
					return Match{}, false
				}
				return Match{Owner: owner, PSK: psk, ChaCha: chacha}, true
			},
		})
		sk, _ := fuzzKeys(chacha)
		d, err := newDatapath(sk)
		if err != nil {
			t.Fatal(err)
		}
		p := &Peer{l: l, owner: owner}
		p.setAddr(addrA)
		p.feed = newFeedConn(conn.LocalAddr(), net.UDPAddrFromAddrPort(addrA), func([]byte) error { return nil })
		p.d.Store(d)
		l.route(addrA, p)
		defer func() {
			l.mu.RLock()
			var ps []*Peer
			for _, q := range l.byAddr {
				ps = append(ps, q)
			}
			l.mu.RUnlock()
			for _, q := range append(ps, p) {
				q.Close()
			}
		}()

		first, second := addrA, addrB
		if fromB {
			first, second = addrB, addrA
		}
		var out [][]byte
		out = l.handle(first, bytes.Clone(dg1), out)
		out = l.handle(second, bytes.Clone(dg2), out)
		for i, v := range out {
			if len(v) < SinkHeadroom {
				t.Fatalf("packet %d: %d bytes, less than the TUN headroom", i, len(v))
			}
			if keep, _ := owner.Check(v[SinkHeadroom:]); !keep {
				t.Fatalf("packet %d delivered without passing Check: %x", i, v[SinkHeadroom:])
			}
		}
		if len(out) > 0 && p.Stats().RxPackets.Load() != uint64(len(out)) {
			t.Fatalf("%d packets out, RxPackets %d", len(out), p.Stats().RxPackets.Load())
		}
		// Routing stays consistent: an open peer is routed from its
		// address, and from no other.
		l.mu.RLock()
		defer l.mu.RUnlock()
		for a, q := range l.byAddr {
			if q.Addr() != a {
				t.Fatalf("peer at %v routed from %v", q.Addr(), a)
			}
		}
		if p.Up() && l.byAddr[p.Addr()] != p {
			t.Fatalf("open peer at %v not routed", p.Addr())
		}
		if !p.Up() && l.byAddr[p.Addr()] == p {
			t.Fatalf("closed peer still routed")
		}
	})
}

// FuzzAfterTakeover hands arbitrary datagrams, each ten times, to the
// Listener from an established peer's address (the peer's pion Conn still
// alive after the takeover), then has the server send data. Nothing may
// panic, no (epoch, sequence number) may be sealed twice in what the
// server sent to the client's address, and pion's records of the data
// epoch stay within the feed budget.
func FuzzAfterTakeover(f *testing.F) {
	f.Add(false, false, spoofedHandshake(100, 1), badCCS(1), []byte{20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 1})
	f.Add(true, false, spoofedHandshake(7, 20), spoofedHandshake(8, 16), []byte{22})
	f.Add(false, true, spoofedHandshake(100, 20), []byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1}, clientHello(make([]byte, AppIDLen)))
	f.Add(true, true, []byte{22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0}, []byte{}, []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, chacha, cid bool, dg1, dg2, dg3 []byte) {
		s := newTestServer(t, chacha)
		s.cid.Store(cid)
		r := newRelay(t, s.addr)
		c, p := s.connect(t, r.Addr())
		// Data records (23, or 25 with CIDs) reach the client; pion's
		// answers (starting with 20 or 22) are only captured.
		r.setDrop(nil, func(dg []byte) bool { return len(dg) == 0 || (dg[0] != 23 && dg[0] != 25) })
		from := r.UpAddr()
		for range 10 {
			for _, dg := range [][]byte{dg1, dg2, dg3} {
				s.l.handle(from, bytes.Clone(dg), nil)
			}
		}
		time.Sleep(10 * time.Millisecond) // pion answers
		if p.Up() {
			pkts := randomPackets(rand.New(rand.NewPCG(1, 2)), 2)
			if err := p.WritePackets(withRoom(pkts), room); err != nil {
				t.Fatal(err)
			}
			clientRead(t, c, len(pkts))
		}
		d := p.d.Load()
		all := r.captured(false, 0)
		assertNoNonceReuse(t, all, len(d.keys.LocalCID))
		start := d.keys.LocalSeq + seqGap
		pion := 0
		for _, dg := range all {
			nums, _ := recordNumbers(dg, len(d.keys.LocalCID))
			for _, n := range nums {
				if n[0] == uint64(d.keys.Epoch) && n[1] < start {
					pion++
				}
			}
		}
		// The Finished, and at most maxRecordsPerFlight per fed datagram.
		if pion > 1+int(feedBudget)*maxRecordsPerFlight {
			t.Fatalf("pion sealed %d records under the data key", pion)
		}
	})
}

package dtls

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/dtls/recordlayer"
)

// legacyClient is a test client of the legacy mode: it resumes the
// session the server offered with a master secret of its choice, as
// openconnect does, built from the RFCs' description (shared with the
// server: the PRF and transcript helpers; the e2e tests check them against
// openconnect).
type legacyClient struct {
	t      testing.TB
	conn   *net.UDPConn
	lg     Legacy // what the client believes: its master secret, the Session-ID
	st     *legacyState
	random []byte
	sealer *recordlayer.Sealer
	opener *recordlayer.Opener
	keys   recordlayer.Keys
}

func dialLegacy(t testing.TB, server *testServer, lg Legacy) *legacyClient {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server.addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &legacyClient{t: t, conn: conn, lg: lg, random: randBytes(32), st: &legacyState{lg: lg}}
}

// hello is the client's ClientHello datagram: the offered suite and the
// renegotiation SCSV, null compression, a renegotiation_info extension.
func (c *legacyClient) hello() []byte {
	v := c.lg.Suite.Version
	body := binary.BigEndian.AppendUint16(nil, v)
	body = append(body, c.random...)
	body = append(body, 32)
	body = append(body, c.lg.SessionID[:]...)
	body = append(body, 0)    // cookie
	body = append(body, 0, 4) // cipher_suites
	body = binary.BigEndian.AppendUint16(body, uint16(c.lg.Suite.Suite))
	body = append(body, 0x00, 0xff)
	body = append(body, 1, 0)                                   // null compression
	body = append(body, 0, 9, 0xff, 0x01, 0, 1, 0, 0, 23, 0, 0) // renegotiation_info, extended_master_secret
	msg := hsMessage(hsClientHello, 0, body)
	rv := uint16(recordlayer.VersionDTLS10)
	if v == recordlayer.VersionDTLS09 {
		rv = v
	}
	return plainRecord(recordlayer.Handshake, rv, 0, msg)
}

func (c *legacyClient) read(d time.Duration) ([]byte, error) {
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.conn.Read(buf)
	return buf[:n], err
}

// flight reads the server's flight and checks it: the ServerHello resumes
// the session, the Finished verifies (only if verify).
func (c *legacyClient) flight(verify bool) []byte {
	t := c.t
	t.Helper()
	dg, err := c.read(3 * time.Second)
	if err != nil {
		t.Fatalf("reading the server's flight: %v", err)
	}
	raw := bytes.Clone(dg)
	sh, rest, err := recordlayer.NextRecord(dg)
	if err != nil || sh[0] != byte(recordlayer.Handshake) {
		t.Fatalf("first record %v: %x", err, dg)
	}
	msg := sh[recordlayer.HeaderLen:]
	body := msg[hsHeaderLen:]
	if msg[0] != hsServerHello || binary.BigEndian.Uint16(body) != c.lg.Suite.Version ||
		body[34] != 32 || !bytes.Equal(body[35:67], c.lg.SessionID[:]) ||
		recordlayer.Suite(binary.BigEndian.Uint16(body[67:])) != c.lg.Suite.Suite {
		t.Fatalf("ServerHello does not resume: %x", body)
	}
	if len(body) != 70+7 || !bytes.Equal(body[70:], []byte{0, 5, 0xff, 1, 0, 1, 0}) {
		t.Fatalf("ServerHello extensions: want renegotiation_info only, have %x", body[70:])
	}
	c.st.addTranscript(c.helloMsg())
	c.st.addTranscript(msg)
	k := legacyKeys(c.lg, c.random, body[2:34])
	k.LocalKey, k.RemoteKey = k.RemoteKey, k.LocalKey
	k.LocalIV, k.RemoteIV = k.RemoteIV, k.LocalIV
	k.LocalMACKey, k.RemoteMACKey = k.RemoteMACKey, k.LocalMACKey
	c.keys = k
	ccs, rest, err := recordlayer.NextRecord(rest)
	wantCCS := []byte{1}
	if c.lg.Suite.Version == recordlayer.VersionDTLS09 {
		wantCCS = []byte{1, 0, 1}
	}
	if err != nil || ccs[0] != byte(recordlayer.ChangeCipherSpec) || !bytes.Equal(ccs[recordlayer.HeaderLen:], wantCCS) {
		t.Fatalf("ChangeCipherSpec %v: %x", err, ccs)
	}
	fin, rest, err := recordlayer.NextRecord(rest)
	if err != nil || len(rest) != 0 {
		t.Fatalf("Finished record: %v, %d bytes behind", err, len(rest))
	}
	if c.opener, err = recordlayer.NewOpener(k, 64); err != nil {
		t.Fatal(err)
	}
	if c.sealer, err = recordlayer.NewSealer(k, 0); err != nil {
		t.Fatal(err)
	}
	ct, pt, err := c.opener.Open(fin)
	if verify {
		if err != nil || ct != recordlayer.Handshake {
			t.Fatalf("server Finished: %v %v", ct, err)
		}
		if want := c.st.verifyData("server finished"); !bytes.Equal(pt[hsHeaderLen:], want) {
			t.Fatalf("server Finished verify_data %x, want %x", pt[hsHeaderLen:], want)
		}
		c.st.addTranscript(pt)
	} else {
		// With the wrong master secret the client cannot open it; its
		// transcript still counts the message as sent.
		c.st.addTranscript(hsMessage(hsFinished, 1, make([]byte, verifyDataLen)))
	}
	return raw
}

func (c *legacyClient) helloMsg() []byte { return c.hello()[recordlayer.HeaderLen:] }

// finish sends ChangeCipherSpec and the client's Finished.
func (c *legacyClient) finish() {
	v := c.lg.Suite.Version
	ccs, seq := []byte{1}, uint16(1)
	if v == recordlayer.VersionDTLS09 {
		ccs, seq = []byte{1, 0, 1}, 2
	}
	rv := v
	dg := plainRecord(recordlayer.ChangeCipherSpec, rv, 1, ccs)
	fin := hsMessage(hsFinished, seq, c.st.verifyData("client finished"))
	dg = append(dg, c.seal(recordlayer.Handshake, fin)...)
	if _, err := c.conn.Write(dg); err != nil {
		c.t.Fatal(err)
	}
}

func (c *legacyClient) seal(ct recordlayer.ContentType, p []byte) []byte {
	hr := c.sealer.Headroom()
	buf := make([]byte, hr+len(p)+c.sealer.Tailroom())
	copy(buf[hr:], p)
	rec, err := c.sealer.Seal(buf, hr, len(p), ct)
	if err != nil {
		c.t.Fatal(err)
	}
	return rec
}

// send sends one CSTP frame of type typ over the channel.
func (c *legacyClient) send(typ cstp.FrameType, p []byte) {
	if _, err := c.conn.Write(c.seal(recordlayer.ApplicationData, append([]byte{byte(typ)}, p...))); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one data record.
func (c *legacyClient) recv() (cstp.FrameType, []byte) {
	c.t.Helper()
	dg, err := c.read(3 * time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	ct, pt, err := c.opener.Open(dg)
	if err != nil || ct != recordlayer.ApplicationData || len(pt) == 0 {
		c.t.Fatalf("record from the server: %v %v", ct, err)
	}
	return cstp.FrameType(pt[0]), pt[1:]
}

func legacyOffer(t testing.TB, name string, dtls12 bool) Legacy {
	t.Helper()
	var lg Legacy
	var ok bool
	if dtls12 {
		lg.Suite, ok, _ = ChooseLegacySuite("", name)
	} else {
		lg.Suite, ok, _ = ChooseLegacySuite(name, "")
	}
	if !ok {
		t.Fatalf("suite %s unknown", name)
	}
	lg.MasterSecret = randBytes(MasterSecretLen)
	return lg
}

func newLegacyServer(t testing.TB, lg *Legacy) *testServer {
	s := newTestServer(t, false)
	copy(lg.SessionID[:], s.appID)
	s.legacy.Store(lg)
	return s
}

// TestLegacyHandshake resumes the offered session for each legacy suite,
// then carries a packet up (to the TUN) and a DPD exchange both ways.
func TestLegacyHandshake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dtls12 bool
	}{
		{"OC-DTLS1_2-AES128-GCM", false}, {"OC-DTLS1_2-AES256-GCM", false},
		{"AES128-SHA", false}, {"AES256-SHA", false},
		{"AES128-GCM-SHA256", true}, {"AES256-GCM-SHA384", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lg := legacyOffer(t, tc.name, tc.dtls12)
			s := newLegacyServer(t, &lg)
			c := dialLegacy(t, s, lg)
			c.conn.Write(c.hello())
			first := c.flight(true)
			// Our flight "was lost": the retransmitted ClientHello gets
			// the same flight again.
			c.conn.Write(c.hello())
			again, err := c.read(3 * time.Second)
			if err != nil || !bytes.Equal(again, first) {
				t.Fatalf("retransmitted flight differs (%v)", err)
			}
			c.finish()
			waitFor(t, "PeerUp", func() bool { return s.owner.ups() == 1 })
			p := s.owner.last()
			if want := "dtls/" + lg.Suite.Suite.String(); p.Name() != want {
				t.Errorf("peer %s, want %s", p.Name(), want)
			}
			pkt := ipv4Packet(rand.New(rand.NewPCG(1, 2)), 1300)
			c.send(cstp.TypeData, pkt)
			waitFor(t, "packet on the TUN", func() bool { return s.tun.count() == 1 })
			if got := s.tun.packets()[0]; !bytes.Equal(got, pkt) {
				t.Fatalf("TUN got %d bytes, sent %d", len(got), len(pkt))
			}
			c.send(cstp.TypeDPDReq, []byte("probe"))
			if typ, pl := c.recv(); typ != cstp.TypeDPDResp || string(pl) != "probe" {
				t.Fatalf("DPD answer %v %q", typ, pl)
			}
			if err := p.Ping(); err != nil {
				t.Fatal(err)
			}
			if typ, _ := c.recv(); typ != cstp.TypeDPDReq {
				t.Fatalf("server's DPD: %v", typ)
			}
			// Downstream packets through WritePackets, as the session sends.
			buf := make([]byte, 64+len(pkt)+Tailroom)
			copy(buf[64:], pkt)
			if err := p.WritePackets([][]byte{buf[:64+len(pkt)]}, 64); err != nil {
				t.Fatal(err)
			}
			if typ, pl := c.recv(); typ != cstp.TypeData || !bytes.Equal(pl, pkt) {
				t.Fatalf("downstream packet: %v, %d bytes", typ, len(pl))
			}
			if n := s.l.Counters.BadRecords.Load(); n != 0 {
				t.Errorf("%d bad records", n)
			}
		})
	}
}

// TestLegacyBadInput: a wrong master secret (the client's Finished does
// not authenticate), a ClientHello naming another session, one without
// the offered suite, and records that do not authenticate on an
// established channel are dropped and counted.
func TestLegacyBadInput(t *testing.T) {
	old := legacyHandshakeTimeout
	legacyHandshakeTimeout = 500 * time.Millisecond
	t.Cleanup(func() { legacyHandshakeTimeout = old })

	t.Run("wrong master secret", func(t *testing.T) {
		lg := legacyOffer(t, "AES128-SHA", false)
		s := newLegacyServer(t, &lg)
		wrong := lg
		wrong.MasterSecret = randBytes(MasterSecretLen)
		c := dialLegacy(t, s, wrong)
		c.conn.Write(c.hello())
		c.flight(false)
		c.finish()
		waitFor(t, "handshake failure", func() bool { return s.l.Counters.HandshakeFailed.Load() == 1 })
		if s.l.Counters.LegacyBadFinished.Load() != 1 || s.l.Counters.BadRecords.Load() == 0 || s.owner.ups() != 0 {
			t.Fatalf("bad finished %d, bad records %d, ups %d", s.l.Counters.LegacyBadFinished.Load(),
				s.l.Counters.BadRecords.Load(), s.owner.ups())
		}
	})
	t.Run("wrong session ID", func(t *testing.T) {
		lg := legacyOffer(t, "OC-DTLS1_2-AES128-GCM", false)
		s := newLegacyServer(t, &lg)
		other := lg
		other.SessionID[0] ^= 1
		c := dialLegacy(t, s, other)
		c.conn.Write(c.hello())
		waitFor(t, "no-session count", func() bool { return s.l.Counters.NoSession.Load() == 1 })
		if _, err := c.read(200 * time.Millisecond); err == nil {
			t.Fatal("server answered a ClientHello for another session")
		}
	})
	t.Run("suite not offered", func(t *testing.T) {
		lg := legacyOffer(t, "OC-DTLS1_2-AES256-GCM", false)
		s := newLegacyServer(t, &lg)
		other := lg
		other.Suite, _, _ = ChooseLegacySuite("OC-DTLS1_2-AES128-GCM", "")
		c := dialLegacy(t, s, other)
		c.conn.Write(c.hello())
		waitFor(t, "bad hello count", func() bool { return s.l.Counters.LegacyBadHello.Load() == 1 })
	})
	t.Run("bad records", func(t *testing.T) {
		lg := legacyOffer(t, "AES256-SHA", false)
		s := newLegacyServer(t, &lg)
		c := dialLegacy(t, s, lg)
		c.conn.Write(c.hello())
		c.flight(true)
		c.finish()
		waitFor(t, "PeerUp", func() bool { return s.owner.ups() == 1 })
		good := c.seal(recordlayer.ApplicationData, append([]byte{byte(cstp.TypeData)}, ipv4Packet(rand.New(rand.NewPCG(3, 4)), 100)...))
		flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
		for _, dg := range [][]byte{
			flip(len(good) - 1),         // padding (last block)
			flip(len(good) - 20),        // MAC
			flip(recordlayer.HeaderLen), // IV: the first block decrypts wrong
			good[:40],
			good[:recordlayer.HeaderLen+16],
		} {
			c.conn.Write(dg)
		}
		c.conn.Write(good)
		c.conn.Write(good) // replay
		waitFor(t, "the good packet", func() bool { return s.tun.count() == 1 })
		waitFor(t, "bad records counted", func() bool { return s.l.Counters.BadRecords.Load() == 6 })
		time.Sleep(50 * time.Millisecond)
		if s.tun.count() != 1 {
			t.Fatalf("%d packets on the TUN", s.tun.count())
		}
	})
}

func FuzzLegacyClientHello(f *testing.F) {
	lg := Legacy{MasterSecret: make([]byte, 48)}
	lg.Suite, _, _ = ChooseLegacySuite("AES128-SHA", "")
	c := &legacyClient{lg: lg, random: make([]byte, 32)}
	f.Add(c.helloMsg())
	lg.Suite, _, _ = ChooseLegacySuite("OC-DTLS1_2-AES256-GCM", "")
	c.lg = lg
	f.Add(c.helloMsg())
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := parseClientHello(msg)
		if err != nil {
			return
		}
		st := &legacyState{lg: lg}
		if st.answer(h) == nil && len(st.flight) == 0 {
			t.Fatal("answered with an empty flight")
		}
	})
}

// TestChooseLegacySuite: ocserv's priorities across both lists, unknown
// names counted, and X-DTLS-Master-Secret's format.
func TestChooseLegacySuite(t *testing.T) {
	for _, tc := range []struct {
		dtls, dtls12, want string
		ok                 bool
		unknown            int
	}{
		{"OC-DTLS1_2-AES128-GCM:AES128-SHA", "", "OC-DTLS1_2-AES128-GCM", true, 0},
		{"AES128-SHA:AES256-SHA", "", "AES256-SHA", true, 0},
		{"AES128-SHA", "AES128-GCM-SHA256", "AES128-SHA", true, 0},
		{"AES128-SHA", "ECDHE-RSA-AES256-GCM-SHA384:AES256-GCM-SHA384", "AES256-GCM-SHA384", true, 1},
		{"OC-DTLS1_2-AES256-GCM", "AES256-GCM-SHA384", "OC-DTLS1_2-AES256-GCM", true, 0},
		{"DES-CBC3-SHA:BOGUS", "", "", false, 2},
		{"", "", "", false, 0},
	} {
		got, ok, unknown := ChooseLegacySuite(tc.dtls, tc.dtls12)
		if ok != tc.ok || got.Name != tc.want || unknown != tc.unknown {
			t.Errorf("%q %q: %q %v %d, want %q %v %d", tc.dtls, tc.dtls12, got.Name, ok, unknown, tc.want, tc.ok, tc.unknown)
		}
	}
	for _, bad := range []string{"", "abcd", strings.Repeat("zz", 48), strings.Repeat("ab", 47), strings.Repeat("ab", 49)} {
		if _, err := ParseMasterSecret(bad); !errors.Is(err, ErrMasterSecret) {
			t.Errorf("ParseMasterSecret(%q): %v", bad, err)
		}
	}
	if ms, err := ParseMasterSecret(strings.Repeat("aB", 48)); err != nil || len(ms) != 48 {
		t.Errorf("valid secret: %v", err)
	}
}

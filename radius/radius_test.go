package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
)

var testSecret = []byte("s3cret")

// testServer is an in-process RADIUS server (layeh's PacketServer).
type testServer struct {
	addr string
	mu   sync.Mutex
	reqs []*layeh.Packet
	// msgAuthOK counts Access-Requests whose Message-Authenticator checked.
	msgAuthOK atomic.Int64
}

func startServer(t *testing.T, h func(w layeh.ResponseWriter, r *layeh.Request)) *testServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: pc.LocalAddr().String()}
	srv := &layeh.PacketServer{
		SecretSource: layeh.StaticSecretSource(testSecret),
		Handler: layeh.HandlerFunc(func(w layeh.ResponseWriter, r *layeh.Request) {
			ts.mu.Lock()
			ts.reqs = append(ts.reqs, r.Packet)
			ts.mu.Unlock()
			if r.Code == layeh.CodeAccessRequest && requestMsgAuthOK(r.Packet) {
				ts.msgAuthOK.Add(1)
			}
			h(w, r)
		}),
	}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ts
}

func (ts *testServer) requests() []*layeh.Packet {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]*layeh.Packet(nil), ts.reqs...)
}

// requestMsgAuthOK checks an Access-Request's Message-Authenticator.
func requestMsgAuthOK(p *layeh.Packet) bool {
	b, err := p.MarshalBinary()
	if err != nil {
		return false
	}
	off := findAttr(b, msgAuthType)
	if off < 0 {
		return false
	}
	got := append([]byte(nil), b[off:off+16]...)
	clear(b[off : off+16])
	m := hmac.New(md5.New, p.Secret)
	m.Write(b)
	return hmac.Equal(m.Sum(nil), got)
}

func testClient(t *testing.T, servers ...string) *Client {
	t.Helper()
	dir := t.TempDir()
	sf := filepath.Join(dir, "secret")
	os.WriteFile(sf, append(testSecret, '\n'), 0o600)
	var errs []string
	cfg := (&Config{Server: servers, SecretFile: sf, NASIdentifier: "test-nas", Timeout: 1, Retries: 1,
		InterimInterval: 1, AcctServer: servers}).Parse("", func(k, f string, a ...any) { errs = append(errs, k) })
	if cfg == nil {
		t.Fatal(errs)
	}
	cfg.Timeout = 200 * time.Millisecond
	return NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func accept(attrs func(p *layeh.Packet)) func(layeh.ResponseWriter, *layeh.Request) {
	return func(w layeh.ResponseWriter, r *layeh.Request) {
		if r.Code == layeh.CodeAccountingRequest {
			w.Write(r.Response(layeh.CodeAccountingResponse))
			return
		}
		if rfc2865.UserPassword_GetString(r.Packet) != "pw" {
			w.Write(r.Response(layeh.CodeAccessReject))
			return
		}
		p := r.Response(layeh.CodeAccessAccept)
		if attrs != nil {
			attrs(p)
		}
		w.Write(p)
	}
}

func TestAuthenticateAccept(t *testing.T) {
	ts := startServer(t, accept(func(p *layeh.Packet) {
		rfc2865.FramedIPAddress_Set(p, net.IPv4(10, 77, 0, 50))
		rfc2865.FramedRoute_AddString(p, "192.168.50.0/24 0.0.0.0 1")
		rfc2865.Class_Add(p, []byte("OU=engineering;"))
		rfc2865.SessionTimeout_Set(p, 3600)
		rfc2865.IdleTimeout_Set(p, 600)
		rfc2865.FilterID_SetString(p, "ignored")
	}))
	c := testClient(t, ts.addr)
	res, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw", CallingStationID: "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Accept {
		t.Fatalf("outcome %v", res.Outcome)
	}
	s := res.Settings
	if s.FramedIP != netip.MustParseAddr("10.77.0.50") || len(s.Routes) != 1 || s.Routes[0] != netip.MustParsePrefix("192.168.50.0/24") ||
		s.Group() != "engineering" || s.SessionTimeout != time.Hour || s.IdleTimeout != 10*time.Minute || len(s.Class) != 1 {
		t.Fatalf("settings %+v", s)
	}
	if len(s.Ignored) != 1 || s.Ignored[0] != "Filter-Id" {
		t.Fatalf("ignored %v", s.Ignored)
	}
	req := ts.requests()[0]
	if ts.msgAuthOK.Load() != 1 {
		t.Fatal("Access-Request without a valid Message-Authenticator")
	}
	if rfc2865.NASIdentifier_GetString(req) != "test-nas" || rfc2865.CallingStationID_GetString(req) != "192.0.2.7" ||
		rfc2865.UserName_GetString(req) != "alice" {
		t.Fatalf("request attributes %v", req.Attributes)
	}
	res, err = c.Authenticate(context.Background(), Request{User: "alice", Password: "wrong"})
	if err != nil || res.Outcome != Reject {
		t.Fatalf("wrong password: %v %v", res, err)
	}
}

func TestAuthenticateChallenge(t *testing.T) {
	ts := startServer(t, func(w layeh.ResponseWriter, r *layeh.Request) {
		st := rfc2865.State_Get(r.Packet)
		switch {
		case st == nil && rfc2865.UserPassword_GetString(r.Packet) == "pw":
			p := r.Response(layeh.CodeAccessChallenge)
			rfc2865.State_SetString(p, "step2")
			rfc2865.ReplyMessage_SetString(p, "Enter your OTP")
			w.Write(p)
		case string(st) == "step2" && rfc2865.UserPassword_GetString(r.Packet) == "123456":
			w.Write(r.Response(layeh.CodeAccessAccept))
		default:
			w.Write(r.Response(layeh.CodeAccessReject))
		}
	})
	c := testClient(t, ts.addr)
	res, err := c.Authenticate(context.Background(), Request{User: "bob", Password: "pw"})
	if err != nil || res.Outcome != Challenge || string(res.State) != "step2" || res.Message != "Enter your OTP" {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = c.Authenticate(context.Background(), Request{User: "bob", Password: "123456", State: res.State})
	if err != nil || res.Outcome != Accept {
		t.Fatalf("%+v %v", res, err)
	}
}

// silent is a UDP socket that reads and never answers.
func silent(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestFailover(t *testing.T) {
	ts := startServer(t, accept(nil))
	// A dead port (ICMP unreachable) and a silent server before the live one.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	c := testClient(t, dead, silent(t), ts.addr)
	start := time.Now()
	res, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	if err != nil || res.Outcome != Accept || res.Server != ts.addr {
		t.Fatalf("%+v %v", res, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failover took %s", d)
	}
	if c.Counters.Failovers.Load() != 2 {
		t.Fatalf("failovers %d", c.Counters.Failovers.Load())
	}
	// The live server is preferred from now on: no further failover.
	if _, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if c.Counters.Failovers.Load() != 2 {
		t.Fatalf("failovers %d after the second login", c.Counters.Failovers.Load())
	}
}

func TestTimeout(t *testing.T) {
	c := testClient(t, silent(t))
	start := time.Now()
	_, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err %v", err)
	}
	// 2 tries of 200 ms.
	if d := time.Since(start); d < 350*time.Millisecond || d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
	if c.Counters.NoAnswer.Load() != 2 || c.Counters.Unreachable.Load() != 1 {
		t.Fatalf("no-answer %d unreachable %d", c.Counters.NoAnswer.Load(), c.Counters.Unreachable.Load())
	}
}

// rawServer answers every request with what reply makes of it.
func rawServer(t *testing.T, reply func(req []byte) []byte) string {
	return rawServerN(t, func(req []byte) [][]byte { return [][]byte{reply(req)} })
}

// rawServerN answers every request with the replies reply makes of it.
func rawServerN(t *testing.T, reply func(req []byte) [][]byte) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			for _, out := range reply(append([]byte(nil), b[:n]...)) {
				if out != nil {
					pc.WriteTo(out, from)
				}
			}
		}
	}()
	return pc.LocalAddr().String()
}

// acceptFor encodes an Access-Accept to req with attrs, signed with secret.
func acceptFor(t *testing.T, req []byte, secret []byte, code layeh.Code, attrs layeh.Attributes) []byte {
	p := &layeh.Packet{Code: code, Identifier: req[1], Secret: secret, Attributes: attrs}
	copy(p.Authenticator[:], req[4:20])
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadAuthenticatorDropped(t *testing.T) {
	addr := rawServer(t, func(req []byte) []byte {
		return acceptFor(t, req, []byte("other-secret"), layeh.CodeAccessAccept, nil)
	})
	c := testClient(t, addr)
	_, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err %v", err)
	}
	if c.Counters.BadAuthenticator.Load() == 0 || c.Counters.Accepts.Load() != 0 {
		t.Fatalf("bad-authenticator %d accepts %d", c.Counters.BadAuthenticator.Load(), c.Counters.Accepts.Load())
	}
}

func TestBadMessageAuthenticatorDropped(t *testing.T) {
	addr := rawServer(t, func(req []byte) []byte {
		// A right Response Authenticator over a wrong Message-Authenticator.
		attrs := layeh.Attributes{{Type: msgAuthType, Attribute: make([]byte, 16)}}
		attrs[0].Attribute[0] = 1
		return acceptFor(t, req, testSecret, layeh.CodeAccessAccept, attrs)
	})
	c := testClient(t, addr)
	if _, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"}); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err %v", err)
	}
	if c.Counters.BadAuthenticator.Load() == 0 {
		t.Fatal("not counted")
	}
}

func TestGoodMessageAuthenticatorAccepted(t *testing.T) {
	addr := rawServer(t, func(req []byte) []byte {
		attrs := layeh.Attributes{{Type: msgAuthType, Attribute: make([]byte, 16)}}
		// Sign: HMAC over the reply with the request authenticator, then
		// the Response Authenticator over the result.
		p := &layeh.Packet{Code: layeh.CodeAccessAccept, Identifier: req[1], Secret: testSecret, Attributes: attrs}
		copy(p.Authenticator[:], req[4:20])
		b, _ := p.MarshalBinary()
		m := hmac.New(md5.New, testSecret)
		m.Write(b)
		copy(attrs[0].Attribute, m.Sum(nil))
		b, _ = p.Encode()
		return b
	})
	c := testClient(t, addr)
	c.cfg.RequireMsgAuth = true
	res, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	if err != nil || res.Outcome != Accept {
		t.Fatalf("%v %v", res, err)
	}
}

func TestMalformedReplies(t *testing.T) {
	addr := rawServerN(t, func(req []byte) [][]byte {
		// Garbage, then an attribute whose length runs past the packet,
		// then a well-formed Accept with a Framed-IP-Address of 3 bytes.
		b := acceptFor(t, req, testSecret, layeh.CodeAccessAccept, layeh.Attributes{{Type: 18, Attribute: []byte("hi")}})
		b[21] = 40
		return [][]byte{{2, req[1], 0, 5}, b,
			acceptFor(t, req, testSecret, layeh.CodeAccessAccept, layeh.Attributes{{Type: attrFramedIP, Attribute: []byte{10, 0, 0}}})}
	})
	c := testClient(t, addr)
	_, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	var ae *AttrError
	if !errors.As(err, &ae) || ae.Attr != "Framed-IP-Address" {
		t.Fatalf("err %v", err)
	}
	if c.Counters.BadReply.Load() != 2 || c.Counters.BadAttributes.Load() != 1 {
		t.Fatalf("bad-reply %d bad-attributes %d", c.Counters.BadReply.Load(), c.Counters.BadAttributes.Load())
	}
}

func TestParseAccept(t *testing.T) {
	a := func(t byte, v ...byte) *layeh.AVP { return &layeh.AVP{Type: layeh.Type(t), Attribute: v} }
	s := func(t byte, v string) *layeh.AVP { return &layeh.AVP{Type: layeh.Type(t), Attribute: []byte(v)} }
	good := []struct {
		attrs layeh.Attributes
		check func(*Settings) bool
	}{
		{layeh.Attributes{a(attrFramedIP, 255, 255, 255, 254)}, func(s *Settings) bool { return !s.FramedIP.IsValid() }},
		{layeh.Attributes{s(attrFramedRoute, "10.9.0.0 255.255.0.0 0.0.0.0 1")}, func(s *Settings) bool {
			return s.Routes[0] == netip.MustParsePrefix("10.9.0.0/16")
		}},
		{layeh.Attributes{s(attrFramedRoute, "10.9.8.7")}, func(s *Settings) bool { return s.Routes[0].Bits() == 32 }},
		{layeh.Attributes{a(attrFramedIPv6Pfx, 0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1)}, func(s *Settings) bool {
			return s.Routes[0] == netip.MustParsePrefix("2001:db8:1::/48")
		}},
		{layeh.Attributes{s(attrFramedIPv6Route, "2001:db8:2::/64 :: 1")}, func(s *Settings) bool {
			return s.Routes[0] == netip.MustParsePrefix("2001:db8:2::/64")
		}},
		{layeh.Attributes{s(attrClass, "OU=a;OU=b;"), s(attrClass, "opaque-id")}, func(s *Settings) bool {
			return len(s.Groups) == 2 && s.Groups[1] == "b" && len(s.Class) == 2
		}},
		{layeh.Attributes{a(attrInterimInterval, 0, 0, 0, 5)}, func(s *Settings) bool { return s.Interim == MinAttrInterim }},
	}
	for i, c := range good {
		set, err := ParseAccept(c.attrs, true)
		if err != nil || !c.check(set) {
			t.Errorf("good %d: %+v %v", i, set, err)
		}
	}
	bad := []layeh.Attributes{
		{a(attrFramedIP, 1, 2, 3, 4, 5)},
		{a(attrFramedIP, 10, 0, 0, 1), a(attrFramedIP, 10, 0, 0, 2)},
		{s(attrFramedRoute, "10.9.0.1/16")},
		{s(attrFramedRoute, "0.0.0.0/0")},
		{s(attrFramedRoute, "nonsense")},
		{s(attrFramedRoute, "2001:db8::/32")},
		{s(attrFramedRoute, "10.0.0.0 255.0.255.0")},
		{a(attrFramedIPv6Pfx, 0, 129)},
		{a(attrFramedIPv6Pfx, 0, 64, 0x20)},
		{a(attrSessionTimeout, 0, 1)},
		{a(attrClass)},
	}
	for i, attrs := range bad {
		if set, err := ParseAccept(attrs, true); err == nil {
			t.Errorf("bad %d accepted: %+v", i, set)
		}
	}
}

// FuzzParseAccept: whatever the attributes, ParseAccept returns settings
// within its bounds or an error, and never panics.
func FuzzParseAccept(f *testing.F) {
	f.Add([]byte{8, 6, 10, 77, 0, 5, 22, 12, '1', '0', '.', '1', '.', '0', '.', '0', '/', '1', '6'})
	f.Add([]byte{25, 8, 'O', 'U', '=', 'x', ';', ' ', 27, 6, 0, 0, 1, 0})
	f.Add([]byte{97, 6, 0, 32, 0x20, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs, err := layeh.ParseAttributes(b)
		if err != nil {
			return
		}
		s, err := ParseAccept(attrs, true)
		if err != nil {
			if s != nil {
				t.Fatal("settings with an error")
			}
			return
		}
		if len(s.Routes) > MaxRoutes || len(s.Class) > MaxClasses || len(s.Groups) > MaxGroups {
			t.Fatalf("bounds: %d routes %d classes %d groups", len(s.Routes), len(s.Class), len(s.Groups))
		}
		for _, p := range s.Routes {
			if !p.IsValid() || p.Masked() != p || p.Bits() == 0 {
				t.Fatalf("bad route %s", p)
			}
		}
		if s.FramedIP.IsValid() && !s.FramedIP.Is4() {
			t.Fatal("IPv6 Framed-IP")
		}
		if s.Interim != 0 && s.Interim < MinAttrInterim {
			t.Fatal("interim below the minimum")
		}
	})
}

func TestAccounting(t *testing.T) {
	ts := startServer(t, accept(nil))
	c := testClient(t, ts.addr)
	a := NewAccounting(c)
	var usage atomic.Pointer[Usage]
	usage.Store(&Usage{InOctets: 5<<32 + 7, OutOctets: 1000, InPackets: 3, OutPackets: 4})
	s := a.Start(SessionInfo{User: "alice", FramedIP: netip.MustParseAddr("10.77.0.9"), CallingStationID: "192.0.2.1",
		Class: [][]byte{[]byte("OU=x;")}, MultiSessionID: "m1", Usage: func() Usage { return *usage.Load() }})
	time.Sleep(1300 * time.Millisecond) // one interim (interim-interval 1)
	s.Stop(CauseUserRequest)
	a.Close(context.Background())
	var start, interim, stop *layeh.Packet
	for _, p := range ts.requests() {
		switch rfc2866.AcctStatusType_Get(p) {
		case rfc2866.AcctStatusType_Value_Start:
			start = p
		case rfc2866.AcctStatusType_Value_InterimUpdate:
			interim = p
		case rfc2866.AcctStatusType_Value_Stop:
			stop = p
		}
	}
	if start == nil || interim == nil || stop == nil {
		t.Fatalf("start %v interim %v stop %v", start != nil, interim != nil, stop != nil)
	}
	for _, p := range []*layeh.Packet{start, interim, stop} {
		if rfc2866.AcctSessionID_GetString(p) != s.ID() || string(rfc2865.Class_Get(p)) != "OU=x;" ||
			rfc2865.FramedIPAddress_Get(p).String() != "10.77.0.9" || rfc2865.UserName_GetString(p) != "alice" {
			t.Fatalf("record attributes %v", p.Attributes)
		}
	}
	if rfc2866.AcctInputOctets_Get(stop) != 7 || rfc2869.AcctInputGigawords_Get(stop) != 5 ||
		rfc2866.AcctOutputOctets_Get(stop) != 1000 || rfc2866.AcctInputPackets_Get(stop) != 3 ||
		rfc2866.AcctOutputPackets_Get(stop) != 4 || rfc2866.AcctTerminateCause_Get(stop) != CauseUserRequest {
		t.Fatalf("stop %v", stop.Attributes)
	}
	if c.Counters.AcctSent.Load() < 3 {
		t.Fatalf("sent %d", c.Counters.AcctSent.Load())
	}
}

// TestAccountingNeverBlocks: with no server answering, Start and Stop
// return at once, a full queue drops (counted), and Close gives up at
// its deadline.
func TestAccountingNeverBlocks(t *testing.T) {
	c := testClient(t, silent(t))
	c.cfg.AcctQueue = 2
	c.cfg.Interim = 0
	a := NewAccounting(c)
	start := time.Now()
	for range 10 {
		a.Start(SessionInfo{User: "u"}).Stop(CauseNASReboot)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("enqueueing took %s", d)
	}
	if c.Counters.AcctQueueFull.Load() == 0 {
		t.Fatal("no record dropped at a full queue")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	a.Close(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s", d)
	}
}

func TestConfigParse(t *testing.T) {
	dir := t.TempDir()
	sf := filepath.Join(dir, "secret")
	os.WriteFile(sf, []byte("x\n"), 0o600)
	var keys []string
	bad := func(k, f string, a ...any) { keys = append(keys, k) }
	p := (&Config{Server: []string{"10.0.0.1", "[2001:db8::1]:1645", "2001:db8::2"}, SecretFile: sf}).Parse("node1", bad)
	if p == nil || p.Auth[0] != "10.0.0.1:1812" || p.Auth[1] != "[2001:db8::1]:1645" || p.Auth[2] != "[2001:db8::2]:1812" ||
		p.Acct[0] != "10.0.0.1:1813" || p.Acct[1] != "[2001:db8::1]:1813" || p.NASIdentifier != "node1" || !p.Accounting ||
		p.Timeout != DefaultTimeout*time.Second || p.Retries != 0 {
		t.Fatalf("%+v %v", p, keys)
	}
	keys = nil
	if p := (&Config{Server: []string{"h:99999"}, SecretFile: filepath.Join(dir, "none"), Timeout: -1}).Parse("", bad); p != nil {
		t.Fatal("bad config accepted")
	}
	if len(keys) != 3 {
		t.Fatalf("errors for %v", keys)
	}
}

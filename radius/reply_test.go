package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"net"
	"net/netip"
	"testing"

	layeh "layeh.com/radius"
)

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

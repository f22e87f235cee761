package cstp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("STF\x01\x05\xdc\x00\x00"))
	f.Add([]byte("STF\x01\xff\xff\x09\x00"))
	f.Add([]byte("STF\x01\x00\x00\x07\x01"))
	f.Add([]byte("HTTP/1.1 200"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ft, n, err := ParseHeader(b)
		if err != nil {
			return
		}
		if len(b) < HeaderLen || n < 0 || n > MaxPayload {
			t.Fatalf("accepted % x as %v/%d", b, ft, n)
		}
		var again [HeaderLen]byte
		PutHeader(again[:], ft, n)
		if !bytes.Equal(again[:], b[:HeaderLen]) {
			t.Fatalf("PutHeader(ParseHeader(% x)) = % x", b[:HeaderLen], again)
		}
	})
}

func FuzzReader(f *testing.F) {
	var stream []byte
	stream = AppendFrame(stream, TypeData, []byte("hello"))
	stream = AppendFrame(stream, TypeDPDReq, nil)
	f.Add(stream, uint16(1500))
	f.Add(AppendFrame(nil, TypeData, make([]byte, 2000)), uint16(1500))
	f.Add([]byte("STF\x01\xff\xff\x00\x00abc"), uint16(0xffff))
	f.Add([]byte("STF\x01\x00\x02\x00\x01ab"), uint16(10))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		maxPayload := max(int(limit), 1)
		r, err := NewReader(bufio.NewReaderSize(bytes.NewReader(data), HeaderLen+MaxPayload), maxPayload)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for {
			ft, p, err := r.Next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrBadMagic) &&
					!errors.Is(err, ErrBadVersion) && !errors.Is(err, ErrBadReserved) && !errors.Is(err, ErrFrameTooLong) {
					t.Fatalf("unexpected error %v", err)
				}
				if err == io.EOF && off != len(data) {
					t.Fatalf("io.EOF at offset %d of %d", off, len(data))
				}
				return
			}
			if len(p) > maxPayload {
				t.Fatalf("payload of %d bytes exceeds limit %d", len(p), maxPayload)
			}
			want := data[off : off+HeaderLen+len(p)]
			if byte(ft) != want[6] || !bytes.Equal(p, want[HeaderLen:]) {
				t.Fatalf("frame at %d does not match the stream", off)
			}
			off += HeaderLen + len(p)
			if r.Buffered() > len(data)-off {
				t.Fatalf("Buffered %d > remaining %d", r.Buffered(), len(data)-off)
			}
		}
	})
}

func FuzzParseClientMessage(f *testing.F) {
	f.Add("application/xml; charset=utf-8", []byte(openconnectInit))
	f.Add("application/xml; charset=utf-8", []byte(openconnectReply))
	f.Add("application/xml", []byte(openconnectLogout))
	f.Add("application/x-www-form-urlencoded", []byte("username=a&password=b%20c"))
	f.Add("text/plain", []byte("<config-auth type=\"x\"><auth><a>1</a><a>2</a></auth></config-auth>"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		m, err := ParseClientMessage(ct, body)
		if err != nil {
			if m != nil {
				t.Fatal("message and error")
			}
			return
		}
		if m.Fields == nil || m.Type == "" {
			t.Fatalf("incomplete message %+v", m)
		}
		if m.Username != m.Fields["username"] || m.Password != m.Fields["password"] {
			t.Fatalf("Username/Password disagree with Fields: %+v", m)
		}
	})
}

func FuzzParseServerMessage(f *testing.F) {
	for _, doc := range []string{ocservUserForm, ocservPasswordForm, ocservComplete, ocservLegacyForm, ocservGroupForm, asaForm} {
		f.Add([]byte(doc))
	}
	f.Add(AuthForm("msg", "100% err", true, true))
	f.Add(AuthComplete("ok"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseServerMessage(body)
		if err != nil {
			return
		}
		if m.Type == "" {
			t.Fatalf("no type: %+v", m)
		}
		if m.Opaque != nil && (!bytes.HasPrefix(m.Opaque, []byte("<")) || !bytes.Contains(body, m.Opaque)) {
			t.Fatalf("opaque %q is not an element of the body", m.Opaque)
		}
		for _, in := range m.Inputs {
			if in.Name == "" || in.Type == "" {
				t.Fatalf("input without name or type: %+v", in)
			}
		}
		_ = AuthReply(m.Inputs, m.Opaque)
	})
}

// FuzzAuthReply checks that any answer survives both a real XML parser
// and ocserv's string search.
func FuzzAuthReply(f *testing.F) {
	f.Add("password", `p&ss<w>rd"'`)
	f.Add("username", "alice")
	f.Add("secondary_password", "\r\n\t\x00\xff")
	f.Fuzz(func(t *testing.T, name, value string) {
		if len(name)+len(value) > 4096 {
			return // long inputs only slow the fuzzer down
		}
		doc := AuthReply([]FormInput{{Type: "text", Name: name, Value: value}}, nil)
		m, err := ParseClientMessage("application/xml", doc)
		if err != nil {
			if len(doc) > MaxClientMessage {
				return
			}
			t.Fatalf("AuthReply output does not parse: %v\n%q", err, doc)
		}
		if !isXMLName(name) || name == "group_list" {
			if len(m.Fields) != 0 {
				t.Fatalf("field %q was not dropped: %v", name, m.Fields)
			}
			return
		}
		want := strings.Map(func(r rune) rune {
			if !isXMLChar(r) {
				return utf8.RuneError
			}
			return r
		}, value)
		if got := m.Fields[name]; got != want {
			t.Fatalf("field %q = %q, want %q", name, got, want)
		}
		if name == "username" && utf8.ValidString(value) && !strings.ContainsRune(value, '\r') && want == value {
			if got, ok := ocservField(string(doc), "username"); !ok || got != value {
				t.Fatalf("ocserv would read %q, want %q", got, value)
			}
		}
	})
}

func FuzzParseTunnelParams(f *testing.F) {
	f.Add("1400", "10.0.0.2", "255.255.255.0", "fd00::2/64", "10.1.0.0/255.255.0.0", "fd00:1::/64", "10.0.0.53", "30", "443", "a5a5", "example.test")
	f.Add("1434", "fd00::2", "fd00::/64", "", "10.1.0.0/16", "0.0.0.0/0.0.0.0", "fd00::53", "none", "0", "", "")
	f.Add("x", "", "", "", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, mtu, addr, mask, addr6, inc, exc, dns, num, port, appID, domain string) {
		h := http.Header{}
		set := func(k, v string) {
			if v != "" {
				h.Add(k, v)
			}
		}
		set("X-CSTP-MTU", mtu)
		set("X-CSTP-Address", addr)
		set("X-CSTP-Netmask", mask)
		set("X-CSTP-Address-IP6", addr6)
		set("X-CSTP-Split-Include", inc)
		set("X-CSTP-Split-Include-IP6", inc)
		set("X-CSTP-Split-Exclude", exc)
		set("X-CSTP-DNS", dns)
		set("X-CSTP-DPD", num)
		set("X-CSTP-Idle-Timeout", num)
		set("X-DTLS-Keepalive", num)
		set("X-DTLS-Port", port)
		set("X-DTLS-App-ID", appID)
		set("X-CSTP-Default-Domain", domain)
		p, err := ParseTunnelParams(h)
		if err != nil {
			return
		}
		if p.MTU <= 0 || !p.Address.IsValid() && !p.AddressIP6.IsValid() {
			t.Fatalf("accepted without MTU or address: %+v", p)
		}
		for _, r := range append(p.SplitInclude, p.SplitExclude...) {
			if r != r.Masked() {
				t.Fatalf("route %v not masked", r)
			}
		}

		// What we parse we can send, and read back the same.
		var buf bytes.Buffer
		if err := p.WriteResponse(&buf); err != nil {
			if !validHeaderValue(p.DefaultDomain) {
				return
			}
			t.Fatalf("WriteResponse(%+v): %v", p, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(&buf), &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("re-reading our response: %v\n%q", err, buf.String())
		}
		q, err := ParseTunnelParams(resp.Header)
		if err != nil {
			t.Fatalf("re-parsing our response: %v\n%q", err, buf.String())
		}
		q.Extra.Del("X-DTLS-Rekey-Method")
		if len(q.Extra) == 0 {
			q.Extra = nil
		}
		want := *p
		if !want.Address.IsValid() {
			want.Netmask = netip.Addr{}
		}
		if want.DTLSPort == 0 {
			want.DTLSAppID, want.DTLSCipherSuite = nil, ""
			want.DTLSDPD, want.DTLSKeepalive, want.DTLSMTU = 0, 0, 0
		}
		want.DefaultDomain = strings.TrimSpace(want.DefaultDomain)
		if !reflect.DeepEqual(&want, q) {
			t.Fatalf("round trip:\nwant %+v\n got %+v\n%s", &want, q, buf.String())
		}
	})
}

package cstp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestConnectRequestRoundTrip(t *testing.T) {
	in := &ConnectRequest{
		Cookie:          "AByA+GbamZmeT/dmWuSXqIOY1VBfhIfDJCKBlXe1/yA=",
		Hostname:        "laptop",
		BaseMTU:         1500,
		MTU:             1434,
		PrevAddress:     netip.MustParseAddr("192.168.99.50"),
		PrevAddressIP6:  netip.MustParsePrefix("fd00:99::50/64"),
		DTLSCipherSuite: "PSK-NEGOTIATE:OC-DTLS1_2-AES256-GCM",
		Extra:           http.Header{"X-Kvpn-Batch": {"1"}, "X-Kvpn-Features": {"a", "b"}},
	}
	var buf bytes.Buffer
	if err := in.WriteTo(&buf, "vpn.example.com:4443"); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	for _, line := range []string{
		"CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\n",
		"\r\nHost: vpn.example.com:4443\r\n",
		"\r\nCookie: webvpn=AByA+GbamZmeT/dmWuSXqIOY1VBfhIfDJCKBlXe1/yA=\r\n",
		"\r\nX-CSTP-Version: 1\r\n",
		"\r\nX-CSTP-Base-MTU: 1500\r\n",
		"\r\nX-CSTP-MTU: 1434\r\n",
		"\r\nX-CSTP-Address-Type: IPv6,IPv4\r\n",
		"\r\nX-CSTP-Full-IPv6-Capability: true\r\n",
		"\r\nX-CSTP-Address: 192.168.99.50\r\n",
		"\r\nX-DTLS-CipherSuite: PSK-NEGOTIATE:OC-DTLS1_2-AES256-GCM\r\n",
		"\r\nUser-Agent: Open AnyConnect VPN Agent v9",
	} {
		if !strings.Contains(raw, line) {
			t.Errorf("request lacks %q:\n%s", line, raw)
		}
	}
	if !strings.HasSuffix(raw, "\r\n\r\n") {
		t.Errorf("request does not end with a blank line: %q", raw)
	}

	br := bufio.NewReader(strings.NewReader(raw + "STF\x01"))
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseConnectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in %+v\nout %+v", in, out)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "STF\x01" {
		t.Errorf("ReadRequest consumed tunnel bytes; left %q", rest)
	}
}

// The CONNECT request openconnect 9.01 sent to a test server (from its -v
// output, with the STRAP keys shortened).
const openconnectConnect = "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\n" +
	"Host: 127.0.0.1:4444\r\n" +
	"User-Agent: Open AnyConnect VPN Agent v9.01-3\r\n" +
	"Cookie: webvpn=a1b2c3d4e5f6\r\n" +
	"X-CSTP-Version: 1\r\n" +
	"X-CSTP-Hostname: vm\r\n" +
	"X-AnyConnect-STRAP-Verify: MEQCIAFki4S9==\r\n" +
	"X-CSTP-Accept-Encoding: oc-lz4,lzs\r\n" +
	"X-CSTP-Base-MTU: 1500\r\n" +
	"X-CSTP-MTU: 1390\r\n" +
	"X-CSTP-Address-Type: IPv6,IPv4\r\n" +
	"X-CSTP-Full-IPv6-Capability: true\r\n" +
	"X-CSTP-Address: 192.168.77.10\r\n" +
	"X-DTLS-Master-Secret: 4C7F6A8E\r\n" +
	"X-DTLS-CipherSuite: PSK-NEGOTIATE:OC-DTLS1_2-AES256-GCM:OC2-DTLS1_2-CHACHA20-POLY1305\r\n" +
	"X-DTLS12-CipherSuite: ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256\r\n" +
	"X-DTLS-Accept-Encoding: oc-lz4,lzs\r\n" +
	"\r\n"

func TestParseConnectRequestOpenconnect(t *testing.T) {
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(openconnectConnect)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseConnectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cookie != "a1b2c3d4e5f6" || got.Hostname != "vm" || got.BaseMTU != 1500 || got.MTU != 1390 ||
		got.PrevAddress != netip.MustParseAddr("192.168.77.10") || got.PrevAddressIP6.IsValid() ||
		!strings.HasPrefix(got.DTLSCipherSuite, "PSK-NEGOTIATE:") {
		t.Errorf("parsed %+v", got)
	}
	if got.DTLSMasterSecret != "4C7F6A8E" || got.DTLS12CipherSuite != "ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256" {
		t.Errorf("legacy DTLS headers: %q %q", got.DTLSMasterSecret, got.DTLS12CipherSuite)
	}
	for _, k := range []string{"X-Cstp-Accept-Encoding", "X-Anyconnect-Strap-Verify"} {
		if got.Extra.Get(k) == "" {
			t.Errorf("Extra lacks %s: %v", k, got.Extra)
		}
	}
	for _, k := range []string{"X-Dtls-Master-Secret", "X-Dtls12-Ciphersuite", "X-Cstp-Mtu", "X-Cstp-Version", "X-Cstp-Address-Type", "Cookie", "Host"} {
		if _, ok := got.Extra[k]; ok {
			t.Errorf("Extra has consumed header %s", k)
		}
	}
}

func TestParseConnectRequestErrors(t *testing.T) {
	for name, raw := range map[string]string{
		"wrong path":   strings.Replace(openconnectConnect, TunnelPath, "/tunnel", 1),
		"wrong verb":   strings.Replace(openconnectConnect, "CONNECT ", "GET ", 1),
		"no cookie":    strings.Replace(openconnectConnect, "Cookie: webvpn=a1b2c3d4e5f6\r\n", "", 1),
		"other cookie": strings.Replace(openconnectConnect, "webvpn=", "webvpncontext=", 1),
	} {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, err := ParseConnectRequest(req); err == nil {
			t.Errorf("%s: parsed %+v", name, got)
		}
	}
	// Lenient numbers and addresses, as ocserv's atoi is.
	raw := strings.NewReplacer("X-CSTP-MTU: 1390", "X-CSTP-MTU: lots", "X-CSTP-Address: 192.168.77.10", "X-CSTP-Address: nowhere").Replace(openconnectConnect)
	req, _ := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	got, err := ParseConnectRequest(req)
	if err != nil || got.MTU != 0 || got.PrevAddress.IsValid() {
		t.Errorf("lenient parse: %+v, %v", got, err)
	}
}

func TestConnectRequestWriteErrors(t *testing.T) {
	for name, r := range map[string]*ConnectRequest{
		"no cookie":       {},
		"cookie CRLF":     {Cookie: "a\r\nX-Evil: 1"},
		"hostname LF":     {Cookie: "a", Hostname: "h\nX: y"},
		"bad extra name":  {Cookie: "a", Extra: http.Header{"Bad Name": {"v"}}},
		"bad extra value": {Cookie: "a", Extra: http.Header{"X-Kvpn-A": {"v\r\n"}}},
	} {
		var buf bytes.Buffer
		if err := r.WriteTo(&buf, "host"); err == nil || buf.Len() != 0 {
			t.Errorf("%s: err %v, wrote %q", name, err, buf.String())
		}
	}
	if err := (&ConnectRequest{Cookie: "a"}).WriteTo(&bytes.Buffer{}, "host\r\nX: 1"); err == nil {
		t.Error("host with CRLF accepted")
	}
}

func fullParams() *TunnelParams {
	return &TunnelParams{
		Address:       netip.MustParseAddr("192.168.99.50"),
		Netmask:       netip.MustParseAddr("255.255.255.0"),
		AddressIP6:    netip.MustParsePrefix("fd00:99::50/64"),
		SplitInclude:  []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.20.30.0/24"), netip.MustParsePrefix("fd00:1::/64")},
		SplitExclude:  []netip.Prefix{netip.MustParsePrefix("10.10.5.0/24"), netip.MustParsePrefix("0.0.0.0/0")},
		DNS:           []netip.Addr{netip.MustParseAddr("10.10.0.53"), netip.MustParseAddr("fd00:1::53")},
		DefaultDomain: "example.test",
		Banner:        "Welcome & behave",
		MTU:           1434, BaseMTU: 1500,
		DPD: 90, Keepalive: 32400, IdleTimeout: 1200, SessionTimeout: 86400,
		RekeyMethod: "new-tunnel", RekeyTime: 172800,
		DTLSPort: 443, DTLSAppID: bytes.Repeat([]byte{0xa5, 0x01}, 16), DTLSCipherSuite: "PSK-NEGOTIATE",
		DTLSDPD: 90, DTLSKeepalive: 32400, DTLSMTU: 1434,
		Extra: http.Header{"X-Kvpn-Batch": {"64"}},
	}
}

func TestTunnelParamsRoundTrip(t *testing.T) {
	in := fullParams()
	var buf bytes.Buffer
	if err := in.WriteResponse(&buf); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	for _, line := range []string{
		"HTTP/1.1 200 CONNECTED\r\n",
		"\r\nX-CSTP-Version: 1\r\n",
		"\r\nX-CSTP-Address: 192.168.99.50\r\n",
		"\r\nX-CSTP-Netmask: 255.255.255.0\r\n",
		"\r\nX-CSTP-Address-IP6: fd00:99::50/64\r\n",
		"\r\nX-CSTP-Split-Include: 10.10.0.0/255.255.0.0\r\n",
		"\r\nX-CSTP-Split-Include: 10.20.30.0/255.255.255.0\r\n",
		"\r\nX-CSTP-Split-Include-IP6: fd00:1::/64\r\n",
		"\r\nX-CSTP-Split-Exclude: 0.0.0.0/0.0.0.0\r\n",
		"\r\nX-CSTP-DNS: 10.10.0.53\r\n",
		"\r\nX-CSTP-MTU: 1434\r\n",
		"\r\nX-CSTP-Rekey-Method: new-tunnel\r\n",
		"\r\nX-DTLS-App-ID: a501a501",
		"\r\nX-DTLS-Rekey-Method: none\r\n",
		"\r\nX-DTLS-CipherSuite: PSK-NEGOTIATE\r\n",
		"\r\nX-Kvpn-Batch: 64\r\n",
	} {
		if !strings.Contains(raw, line) {
			t.Errorf("response lacks %q:\n%s", line, raw)
		}
	}

	// The response has no body and no Content-Length: what follows the
	// blank line must be left in the bufio.Reader for the frame Reader.
	frame := AppendFrame(nil, TypeData, []byte("first packet"))
	br := bufio.NewReaderSize(io.MultiReader(&buf, bytes.NewReader(frame)), HeaderLen+MaxPayload)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %s", resp.Status)
	}
	out, err := ParseTunnelParams(resp.Header)
	if err != nil {
		t.Fatal(err)
	}
	// Written for openconnect's sake, not a field: it lands in Extra.
	if got := out.Extra.Get("X-DTLS-Rekey-Method"); got != "none" {
		t.Errorf("X-DTLS-Rekey-Method = %q", got)
	}
	out.Extra.Del("X-DTLS-Rekey-Method")
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in %+v\nout %+v", in, out)
	}
	fr, err := NewReader(br, MaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	ft, p, err := fr.Next()
	if err != nil || ft != TypeData || string(p) != "first packet" {
		t.Fatalf("first frame after response: %v %q %v", ft, p, err)
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Errorf("after first frame: %v", err)
	}
}

func TestWriteResponseMinimal(t *testing.T) {
	var buf bytes.Buffer
	p := &TunnelParams{Address: netip.MustParseAddr("10.0.0.2"), MTU: 1400}
	if err := p.WriteResponse(&buf); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	if strings.Contains(raw, "X-DTLS") {
		t.Errorf("DTLS headers without a DTLS port:\n%s", raw)
	}
	for _, line := range []string{"X-CSTP-Rekey-Method: none\r\n", "X-CSTP-Idle-Timeout: none\r\n", "X-CSTP-MTU: 1400\r\n"} {
		if !strings.Contains(raw, line) {
			t.Errorf("response lacks %q:\n%s", line, raw)
		}
	}
	got, err := ReadTunnelResponse(bufio.NewReader(&buf))
	if err != nil {
		t.Fatal(err)
	}
	if got.Address != p.Address || got.MTU != 1400 || got.RekeyMethod != "none" || got.Extra != nil {
		t.Errorf("parsed %+v", got)
	}
}

func TestWriteResponseErrors(t *testing.T) {
	for name, p := range map[string]*TunnelParams{
		"no MTU":        {Address: netip.MustParseAddr("10.0.0.2")},
		"no address":    {MTU: 1400},
		"banner CRLF":   {Address: netip.MustParseAddr("10.0.0.2"), MTU: 1400, Banner: "line1\r\nline2"},
		"domain LF":     {Address: netip.MustParseAddr("10.0.0.2"), MTU: 1400, DefaultDomain: "a\nb"},
		"bad extra key": {Address: netip.MustParseAddr("10.0.0.2"), MTU: 1400, Extra: http.Header{"X:Y": {"1"}}},
	} {
		var buf bytes.Buffer
		if err := p.WriteResponse(&buf); err == nil || buf.Len() != 0 {
			t.Errorf("%s: err %v, wrote %q", name, err, buf.String())
		}
	}
}

// TestParseTunnelParamsOcserv parses the response ocserv 1.1.6 sent to a
// kvpn CONNECT (routes 10.10.0.0/255.255.0.0, 10.20.0.0/16, fd00:1::/64,
// no-route 10.10.5.0/255.255.255.0, rekey-method ssl).
func TestParseTunnelParamsOcserv(t *testing.T) {
	raw, err := os.ReadFile("testdata/ocserv-connect-response.txt")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ReadTunnelResponse(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	want := &TunnelParams{
		Address:       netip.MustParseAddr("192.168.99.50"),
		Netmask:       netip.MustParseAddr("255.255.255.0"),
		AddressIP6:    netip.MustParsePrefix("fd00:99:0:8e4f:9a7c:c09f:b76e:58ef/64"),
		SplitInclude:  []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:1::/64")},
		SplitExclude:  []netip.Prefix{netip.MustParsePrefix("10.10.5.0/24")},
		DefaultDomain: "example.test",
		Banner:        "Welcome to the test & lab",
		MTU:           1434, BaseMTU: 1500,
		DPD: 90, Keepalive: 32400,
		RekeyMethod: "ssl", RekeyTime: 172822,
		DTLSPort: 4443, DTLSCipherSuite: "PSK-NEGOTIATE", DTLSDPD: 90, DTLSKeepalive: 32400,
	}
	want.DTLSAppID = p.DTLSAppID
	p.Extra = nil
	if len(want.DTLSAppID) != 32 {
		t.Errorf("App-ID is %d bytes, want 32", len(want.DTLSAppID))
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got  %+v\nwant %+v", p, want)
	}
}

func TestParseTunnelParamsLegacyIPv6(t *testing.T) {
	// ocserv without X-CSTP-Full-IPv6-Capability: the IPv6 address comes
	// as a second X-CSTP-Address with an ADDR/LEN netmask.
	h := http.Header{
		"X-Cstp-Mtu":     {"1400"},
		"X-Cstp-Address": {"10.1.1.2", "fd00::2"},
		"X-Cstp-Netmask": {"255.255.255.0", "fd00::/64"},
		"X-Cstp-Dns-Ip6": {"fd00::53"},
	}
	p, err := ParseTunnelParams(h)
	if err != nil {
		t.Fatal(err)
	}
	if p.Address != netip.MustParseAddr("10.1.1.2") || p.Netmask != netip.MustParseAddr("255.255.255.0") ||
		p.AddressIP6 != netip.MustParsePrefix("fd00::2/64") || len(p.DNS) != 1 {
		t.Errorf("parsed %+v", p)
	}
	// IPv6 only is acceptable, as it is to openconnect.
	p, err = ParseTunnelParams(http.Header{"X-Cstp-Mtu": {"1400"}, "X-Cstp-Address-Ip6": {"fd00::2/64"}})
	if err != nil || p.Address.IsValid() || !p.AddressIP6.IsValid() {
		t.Errorf("IPv6 only: %+v, %v", p, err)
	}
}

func TestParseTunnelParamsErrors(t *testing.T) {
	base := func() http.Header {
		return http.Header{"X-Cstp-Mtu": {"1400"}, "X-Cstp-Address": {"10.0.0.2"}}
	}
	for _, tc := range []struct {
		name    string
		mod     func(http.Header)
		wantErr string
	}{
		{"no MTU", func(h http.Header) { delete(h, "X-Cstp-Mtu") }, "no MTU received"},
		{"zero MTU", func(h http.Header) { h.Set("X-Cstp-Mtu", "0") }, "no MTU received"},
		{"text MTU", func(h http.Header) { h.Set("X-Cstp-Mtu", "big") }, `no MTU received (bad X-CSTP-MTU "big")`},
		{"no address", func(h http.Header) { delete(h, "X-Cstp-Address") }, "no address received"},
		{"bad address", func(h http.Header) { h.Set("X-Cstp-Address", "10.0.0") }, `bad X-CSTP-Address "10.0.0"`},
		{"zoned address", func(h http.Header) { h.Set("X-Cstp-Address", "fe80::1%eth0") }, "bad X-CSTP-Address"},
		{"bad netmask", func(h http.Header) { h.Set("X-Cstp-Netmask", "255.255.0") }, "bad X-CSTP-Netmask"},
		{"bad ip6", func(h http.Header) { h.Set("X-Cstp-Address-Ip6", "fd00::1") }, "bad X-CSTP-Address-IP6"},
		{"ip4 as ip6", func(h http.Header) { h.Set("X-Cstp-Address-Ip6", "10.0.0.1/24") }, "bad X-CSTP-Address-IP6"},
		{"route no addr", func(h http.Header) { h.Add("X-Cstp-Split-Include", "/24") }, `bad route syntax in X-CSTP-Split-Include "/24"`},
		{"route bad mask", func(h http.Header) { h.Add("X-Cstp-Split-Include", "10.0.0.0/255.0.255.0") }, "non-contiguous"},
		{"route long mask", func(h http.Header) { h.Add("X-Cstp-Split-Include", "10.0.0.0/33") }, "bad route syntax"},
		{"route junk", func(h http.Header) { h.Add("X-Cstp-Split-Exclude", "10.0.0.0/8 via x") }, "X-CSTP-Split-Exclude"},
		{"route sign", func(h http.Header) { h.Add("X-Cstp-Split-Include", "10.0.0.0/+8") }, "bad route syntax"},
		{"route v6 dotted", func(h http.Header) { h.Add("X-Cstp-Split-Include-Ip6", "fd00::/255.0.0.0") }, "X-CSTP-Split-Include-IP6"},
		{"route hostname", func(h http.Header) { h.Add("X-Cstp-Split-Include", "intranet/16") }, "bad route syntax"},
		{"bad dns", func(h http.Header) { h.Add("X-Cstp-Dns", "ns1") }, `bad X-CSTP-DNS "ns1"`},
		{"bad dpd", func(h http.Header) { h.Set("X-Cstp-Dpd", "-5") }, "bad X-CSTP-DPD"},
		{"bad port", func(h http.Header) { h.Set("X-Dtls-Port", "70000") }, "bad X-DTLS-Port"},
		{"bad app id", func(h http.Header) { h.Set("X-Dtls-App-Id", "xyz") }, "bad X-DTLS-App-ID"},
	} {
		h := base()
		tc.mod(h)
		_, err := ParseTunnelParams(h)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestParseRoute(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/255.0.0.0":          "10.0.0.0/8",
		"10.0.0.0/8":                  "10.0.0.0/8",
		"10.1.2.3/255.255.0.0":        "10.1.0.0/16",
		"0.0.0.0/0.0.0.0":             "0.0.0.0/0",
		"192.168.1.1/255.255.255.255": "192.168.1.1/32",
		"192.168.1.1":                 "192.168.1.1/32",
		"fd00:1::/64":                 "fd00:1::/64",
		"fd00:1::5/64":                "fd00:1::/64",
		"::/0":                        "::/0",
		"2001:db8::1":                 "2001:db8::1/128",
		"::ffff:10.0.0.0/8":           "10.0.0.0/8",
	} {
		got, err := parseRoute(in)
		if err != nil || got.String() != want {
			t.Errorf("parseRoute(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"10.0.0.0/8":        "10.0.0.0/255.0.0.0",
		"10.1.2.3/16":       "10.1.0.0/255.255.0.0",
		"0.0.0.0/0":         "0.0.0.0/0.0.0.0",
		"1.2.3.4/32":        "1.2.3.4/255.255.255.255",
		"10.0.0.0/23":       "10.0.0.0/255.255.254.0",
		"fd00:1::/64":       "fd00:1::/64",
		"fd00:1::1:2:3/100": "fd00:1::1:0:0/100",
	} {
		if got := formatRoute(netip.MustParsePrefix(in)); got != want {
			t.Errorf("formatRoute(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestReadTunnelResponseRefused(t *testing.T) {
	for raw, want := range map[string]string{
		// What ocserv 1.1.6 sends for an unknown cookie.
		"HTTP/1.1 401 Cookie is not acceptable\r\n\r\n":                                    "401 Cookie is not acceptable",
		"HTTP/1.1 503 Service Unavailable\r\nX-Reason: Server configuration error\r\n\r\n": "Server configuration error",
		"garbage\r\n\r\n": "reading CONNECT response",
	} {
		_, err := ReadTunnelResponse(bufio.NewReader(strings.NewReader(raw)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", raw, err, want)
		}
	}
}

func TestWriteErrorsPropagate(t *testing.T) {
	w := errWriter{}
	if err := fullParams().WriteResponse(w); !errors.Is(err, errWrite) {
		t.Errorf("WriteResponse error = %v", err)
	}
	if err := (&ConnectRequest{Cookie: "x"}).WriteTo(w, "h"); !errors.Is(err, errWrite) {
		t.Errorf("WriteTo error = %v", err)
	}
}

var errWrite = errors.New("write failed")

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errWrite }

// ReadTunnelResponse is the tests' CONNECT answer parser (vpnc reads the
// answer in client.(*Client).connect, with its own error per status). It reads the server's answer to a CONNECT request from
// br and parses it. On success the next bytes in br are the first CSTP
// frame, so br can be handed to NewReader. A non-200 answer is an error
// carrying the status and any X-Reason header (ocserv answers an
// unacceptable cookie with 401, a server-side problem with 503).
func ReadTunnelResponse(br *bufio.Reader) (*TunnelParams, error) {
	resp, err := ReadResponse(br, http.MethodConnect)
	if err != nil {
		return nil, fmt.Errorf("cstp: reading CONNECT response: %w", err)
	}
	// The response has no body: CSTP frames follow the header. resp.Body
	// must not be read or closed, as that would consume frames.
	if resp.StatusCode != http.StatusOK {
		if reason := resp.Header.Get("X-Reason"); reason != "" {
			return nil, fmt.Errorf("cstp: CONNECT refused: %s (%s)", resp.Status, reason)
		}
		return nil, fmt.Errorf("cstp: CONNECT refused: %s", resp.Status)
	}
	return ParseTunnelParams(resp.Header)
}

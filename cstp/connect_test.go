package cstp

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/netip"
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

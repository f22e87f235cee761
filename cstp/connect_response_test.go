package cstp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

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

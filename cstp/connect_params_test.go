package cstp

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

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

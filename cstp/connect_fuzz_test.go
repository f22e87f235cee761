package cstp

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// FuzzReadTunnelResponse feeds arbitrary raw CONNECT answers (what a server, or
// anyone in its place, sends a client) to ReadTunnelResponse. A parse that
// succeeds must give a usable result (an MTU, an address, an IPv6 address
// that is really IPv6, masked routes), and writing that result and
// parsing it again must give the same addresses, routes and DNS servers.
func FuzzReadTunnelResponse(f *testing.F) {
	f.Add([]byte("X-CSTP-MTU: 1434\r\nX-CSTP-Address: 10.77.0.2\r\nX-CSTP-Netmask: 255.255.255.0\r\n" +
		"X-CSTP-Address-IP6: fd00:77::2/128\r\nX-CSTP-Split-Include: 10.1.0.0/255.255.0.0\r\n" +
		"X-CSTP-Split-Include-IP6: fd00:99::/64\r\nX-CSTP-DNS: fd00::53\r\n\r\n"))
	f.Add([]byte("X-CSTP-MTU: 1400\r\nX-CSTP-Address: fd00::2\r\nX-CSTP-Netmask: fd00::/64\r\n\r\n"))
	f.Add([]byte("X-CSTP-MTU: 1400\r\nX-CSTP-Address-IP6: ::ffff:10.0.0.1/120\r\n\r\n"))
	f.Add([]byte("X-CSTP-MTU: 1400\r\nX-CSTP-Address-IP6: fe80::1%eth0/64\r\nX-CSTP-Split-Exclude-IP6: 10.0.0.0/8\r\n\r\n"))
	f.Add([]byte("X-CSTP-MTU: 1400\r\nX-CSTP-Address: 10.0.0.2\r\nX-CSTP-Split-Include: fd00::/8\r\n" +
		"X-DTLS-Port: 443\r\nX-DTLS-App-ID: 00ff\r\n\r\n"))
	f.Fuzz(func(t *testing.T, hdr []byte) {
		resp := append([]byte("HTTP/1.1 200 CONNECTED\r\n"), hdr...)
		p, err := ReadTunnelResponse(bufio.NewReader(bytes.NewReader(resp)))
		if err != nil {
			return
		}
		if p.MTU <= 0 || !p.Address.IsValid() && !p.AddressIP6.IsValid() {
			t.Fatalf("accepted an answer without MTU or address: %+v", p)
		}
		if p.Address.IsValid() && !p.Address.Is4() {
			t.Fatalf("IPv4 address %s", p.Address)
		}
		if a := p.AddressIP6.Addr(); p.AddressIP6.IsValid() && (!a.Is6() || a.Is4In6() || a.Zone() != "") {
			t.Fatalf("IPv6 address %s", p.AddressIP6)
		}
		for _, r := range append(slices.Clone(p.SplitInclude), p.SplitExclude...) {
			if !r.IsValid() || r.Masked() != r || r.Addr().Zone() != "" {
				t.Fatalf("route %s is not a masked prefix", r)
			}
		}
		var out bytes.Buffer
		if err := p.WriteResponse(&out); err != nil {
			return // a value our writer refuses (a control character, say)
		}
		q, err := ReadTunnelResponse(bufio.NewReader(&out))
		if err != nil {
			t.Fatalf("re-parsing our own answer: %v\n%s", err, out.String())
		}
		if q.Address != p.Address || q.AddressIP6 != p.AddressIP6 || q.MTU != p.MTU {
			t.Fatalf("round trip: %v %v %d, had %v %v %d", q.Address, q.AddressIP6, q.MTU, p.Address, p.AddressIP6, p.MTU)
		}
		for _, l := range [][2][]netip.Prefix{{p.SplitInclude, q.SplitInclude}, {p.SplitExclude, q.SplitExclude}} {
			if !slices.Equal(sortedPrefixes(l[0]), sortedPrefixes(l[1])) {
				t.Fatalf("routes round trip: %v, had %v", l[1], l[0])
			}
		}
		if !slices.Equal(sortedAddrs(p.DNS), sortedAddrs(q.DNS)) {
			t.Fatalf("DNS round trip: %v, had %v", q.DNS, p.DNS)
		}
	})
}

// FuzzParseConnectRequest feeds arbitrary CONNECT requests (what a client
// sends the server before it is trusted with a tunnel) to
// ParseConnectRequest: it must not panic, and a previous IPv6 address it
// returns must be an IPv6 prefix.
func FuzzParseConnectRequest(f *testing.F) {
	f.Add([]byte("Cookie: webvpn=abc\r\nX-CSTP-Base-MTU: 1500\r\nX-CSTP-Address: 10.77.0.2\r\n" +
		"X-CSTP-Address-IP6: fd00:77::2/128\r\nX-DTLS-CipherSuite: PSK-NEGOTIATE\r\n\r\n"))
	f.Add([]byte("Cookie: webvpn=abc\r\nX-CSTP-Address-IP6: 10.0.0.1/24\r\nX-CSTP-MTU: -5\r\n\r\n"))
	f.Add([]byte("Cookie: webvpn=\r\n\r\n"))
	f.Fuzz(func(t *testing.T, hdr []byte) {
		raw := append([]byte("CONNECT "+TunnelPath+" HTTP/1.1\r\nHost: vpn\r\n"), hdr...)
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		r, err := ParseConnectRequest(req)
		if err != nil {
			return
		}
		if r.Cookie == "" || r.BaseMTU < 0 || r.MTU < 0 {
			t.Fatalf("accepted %+v", r)
		}
		if r.PrevAddress.IsValid() && r.PrevAddress.Zone() != "" {
			t.Fatalf("previous address with a zone: %s", r.PrevAddress)
		}
		if r.PrevAddressIP6.IsValid() && strings.Contains(r.PrevAddressIP6.String(), "%") {
			t.Fatalf("previous IPv6 address with a zone: %s", r.PrevAddressIP6)
		}
	})
}

func sortedPrefixes(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	slices.Sort(out)
	return out
}

func sortedAddrs(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	slices.Sort(out)
	return out
}

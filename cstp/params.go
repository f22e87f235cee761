package cstp

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// The CONNECT answer: the tunnel's parameters as X-CSTP-* and X-DTLS-*
// headers, written by a server and parsed by a client.

// TunnelParams is the tunnel configuration a server sends in its 200
// CONNECTED response.
type TunnelParams struct {
	Address    netip.Addr   // X-CSTP-Address
	Netmask    netip.Addr   // X-CSTP-Netmask (dotted quad)
	AddressIP6 netip.Prefix // X-CSTP-Address-IP6 (optional): address and on-link prefix length
	// SplitInclude and SplitExclude are the routes, one header each. IPv4
	// routes are written ADDR/DOTTED-MASK (as ocserv does) in
	// X-CSTP-Split-Include/-Exclude, IPv6 ones ADDR/LEN in the -IP6 variant
	// (as ocserv does; openconnect's cstp.c files both headers into the
	// same route list). Parsing accepts both mask forms and both header
	// names, and returns masked prefixes. No include routes means a full
	// tunnel.
	SplitInclude   []netip.Prefix
	SplitExclude   []netip.Prefix
	DNS            []netip.Addr // X-CSTP-DNS (and X-CSTP-DNS-IP6), one header each
	DefaultDomain  string       // X-CSTP-Default-Domain
	Banner         string       // X-CSTP-Banner
	MTU, BaseMTU   int          // X-CSTP-MTU (tun MTU; ocserv sizes it for DTLS), X-CSTP-Base-MTU (link MTU)
	DPD, Keepalive int          // seconds; 0 = header omitted
	IdleTimeout    int          // seconds; 0 = "none"
	SessionTimeout int          // X-CSTP-Session-Timeout, seconds; 0 = "none"
	RekeyMethod    string       // X-CSTP-Rekey-Method: "none" (default), "new-tunnel" or "ssl"
	RekeyTime      int          // X-CSTP-Rekey-Time, seconds; 0 = header omitted
	// DTLS: all X-DTLS-* headers are omitted when DTLSPort == 0.
	// openconnect only tries DTLS when it gets an X-DTLS-App-ID (or a
	// legacy X-DTLS-Session-ID) and a port.
	DTLSPort        int
	DTLSAppID       []byte // X-DTLS-App-ID, hex; the DTLS ClientHello's session_id
	DTLSCipherSuite string // "PSK-NEGOTIATE" for the PSK scheme both stock tools use
	// The legacy AnyConnect mode instead: X-DTLS-Session-ID (the session
	// the client resumes), and the chosen suite in DTLSCipherSuite or, for
	// a suite from the client's X-DTLS12-CipherSuite list, in
	// DTLS12CipherSuite (X-DTLS12-CipherSuite). When parsing, a lone
	// X-DTLS12-CipherSuite also lands in DTLSCipherSuite.
	DTLSSessionID     []byte
	DTLS12CipherSuite string
	DTLSDPD           int
	DTLSKeepalive     int
	DTLSMTU           int // X-DTLS-MTU (0 = omitted); openconnect uses max(X-CSTP-MTU, X-DTLS-MTU)
	// Extra holds vendor extension headers to send, or, when parsed, every
	// X- header that ParseTunnelParams did not consume. May be nil.
	Extra http.Header
}

// serverName is the Server header of the CONNECT response.
const serverName = "kvpn"

// WriteResponse writes the complete "HTTP/1.1 200 CONNECTED" response,
// ending with the blank line, in a single Write. There is no body: CSTP
// frames follow immediately. Header names are spelled exactly as ocserv
// (worker-vpn.c) spells them, because openconnect (cstp.c
// start_cstp_connection) compares them case-sensitively. It refuses to
// write a response openconnect would abort on: one without an MTU or
// without any address.
func (p *TunnelParams) WriteResponse(w io.Writer) error {
	if p.MTU <= 0 {
		return errors.New("cstp: tunnel response without MTU")
	}
	if !p.Address.IsValid() && !p.AddressIP6.IsValid() {
		return errors.New("cstp: tunnel response without an address")
	}
	hw := headerWriter{b: make([]byte, 0, 1024)}
	hw.b = append(hw.b, "HTTP/1.1 200 CONNECTED\r\n"...)
	hw.add("Server", serverName)
	hw.add("X-CSTP-Version", "1")
	if p.DPD > 0 {
		hw.add("X-CSTP-DPD", strconv.Itoa(p.DPD))
	}
	if p.DefaultDomain != "" {
		hw.add("X-CSTP-Default-Domain", p.DefaultDomain)
	}
	if p.Address.IsValid() {
		hw.add("X-CSTP-Address", p.Address.String())
		if p.Netmask.IsValid() {
			hw.add("X-CSTP-Netmask", p.Netmask.String())
		}
	}
	if p.AddressIP6.IsValid() {
		hw.add("X-CSTP-Address-IP6", p.AddressIP6.String())
	}
	for _, a := range p.DNS {
		if a.IsValid() {
			hw.add("X-CSTP-DNS", a.String())
		}
	}
	hw.addRoutes("Include", p.SplitInclude)
	hw.addRoutes("Exclude", p.SplitExclude)
	if p.Keepalive > 0 {
		hw.add("X-CSTP-Keepalive", strconv.Itoa(p.Keepalive))
	}
	hw.add("X-CSTP-Idle-Timeout", secondsOrNone(p.IdleTimeout))
	hw.add("X-CSTP-Session-Timeout", secondsOrNone(p.SessionTimeout))
	if p.RekeyTime > 0 {
		hw.add("X-CSTP-Rekey-Time", strconv.Itoa(p.RekeyTime))
	}
	rekey := p.RekeyMethod
	if rekey == "" {
		rekey = "none"
	}
	hw.add("X-CSTP-Rekey-Method", rekey)
	if p.DTLSPort > 0 {
		hw.add("X-DTLS-Port", strconv.Itoa(p.DTLSPort))
		if p.DTLSDPD > 0 {
			hw.add("X-DTLS-DPD", strconv.Itoa(p.DTLSDPD))
		}
		if p.DTLSKeepalive > 0 {
			hw.add("X-DTLS-Keepalive", strconv.Itoa(p.DTLSKeepalive))
		}
		hw.add("X-DTLS-Rekey-Method", "none")
		if len(p.DTLSAppID) > 0 {
			hw.add("X-DTLS-App-ID", hex.EncodeToString(p.DTLSAppID))
		}
		if len(p.DTLSSessionID) > 0 {
			hw.add("X-DTLS-Session-ID", hex.EncodeToString(p.DTLSSessionID))
		}
		if p.DTLSCipherSuite != "" {
			hw.add("X-DTLS-CipherSuite", p.DTLSCipherSuite)
		}
		if p.DTLS12CipherSuite != "" {
			hw.add("X-DTLS12-CipherSuite", p.DTLS12CipherSuite)
		}
		if p.DTLSMTU > 0 {
			hw.add("X-DTLS-MTU", strconv.Itoa(p.DTLSMTU))
		}
	}
	if p.BaseMTU > 0 {
		hw.add("X-CSTP-Base-MTU", strconv.Itoa(p.BaseMTU))
	}
	hw.add("X-CSTP-MTU", strconv.Itoa(p.MTU))
	if p.Banner != "" {
		hw.add("X-CSTP-Banner", p.Banner)
	}
	hw.addExtra(p.Extra)
	return hw.finish(w)
}

func secondsOrNone(s int) string {
	if s <= 0 {
		return "none" // as ocserv writes it; openconnect's atol reads 0
	}
	return strconv.Itoa(s)
}

// ParseTunnelParams parses the headers of a 200 CONNECTED response (as
// returned by http.ReadResponse, or any http.Header with canonical keys).
// Like openconnect it fails with "no MTU received" without a positive
// X-CSTP-MTU and with "no address received" without an IPv4 or IPv6
// address; malformed addresses, routes and numbers are errors naming the
// header and value. An IPv6 address sent the legacy way (X-CSTP-Address
// with an "ADDR/LEN" X-CSTP-Netmask, as ocserv does for clients without the
// Full-IPv6 capability) is returned in AddressIP6.
func ParseTunnelParams(h http.Header) (*TunnelParams, error) {
	hr := headerReader{h: h}
	p := &TunnelParams{}

	mtu := hr.get("X-CSTP-MTU")
	if mtu == "" {
		return nil, errors.New("cstp: no MTU received")
	}
	if n, err := strconv.Atoi(mtu); err != nil || n <= 0 {
		return nil, fmt.Errorf("cstp: no MTU received (bad X-CSTP-MTU %q)", mtu)
	} else {
		p.MTU = n
	}

	var addr6 netip.Addr // legacy IPv6 address in X-CSTP-Address
	for _, v := range hr.all("X-CSTP-Address") {
		a, err := parseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("cstp: bad X-CSTP-Address %q", v)
		}
		if a.Is4() {
			if !p.Address.IsValid() {
				p.Address = a
			}
		} else if !addr6.IsValid() {
			addr6 = a
		}
	}
	bits6 := 128
	for _, v := range hr.all("X-CSTP-Netmask") {
		if strings.Contains(v, ":") {
			pfx, err := netip.ParsePrefix(v)
			if err != nil || !pfx.Addr().Is6() {
				return nil, fmt.Errorf("cstp: bad X-CSTP-Netmask %q", v)
			}
			bits6 = pfx.Bits()
			continue
		}
		m, err := parseAddr(v)
		if err != nil || !m.Is4() {
			return nil, fmt.Errorf("cstp: bad X-CSTP-Netmask %q", v)
		}
		p.Netmask = m
	}
	if v := hr.get("X-CSTP-Address-IP6"); v != "" {
		pfx, err := netip.ParsePrefix(v)
		if err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6() {
			return nil, fmt.Errorf("cstp: bad X-CSTP-Address-IP6 %q", v)
		}
		p.AddressIP6 = pfx
	} else if addr6.IsValid() {
		p.AddressIP6 = netip.PrefixFrom(addr6, bits6)
	}
	if !p.Address.IsValid() && !p.AddressIP6.IsValid() {
		return nil, errors.New("cstp: no address received")
	}

	var err error
	if p.SplitInclude, err = hr.routes("X-CSTP-Split-Include", "X-CSTP-Split-Include-IP6"); err != nil {
		return nil, err
	}
	if p.SplitExclude, err = hr.routes("X-CSTP-Split-Exclude", "X-CSTP-Split-Exclude-IP6"); err != nil {
		return nil, err
	}
	for _, name := range []string{"X-CSTP-DNS", "X-CSTP-DNS-IP6"} {
		for _, v := range hr.all(name) {
			a, err := parseAddr(v)
			if err != nil {
				return nil, fmt.Errorf("cstp: bad %s %q", name, v)
			}
			p.DNS = append(p.DNS, a)
		}
	}
	p.DefaultDomain = hr.get("X-CSTP-Default-Domain")
	p.Banner = hr.get("X-CSTP-Banner")
	p.RekeyMethod = hr.get("X-CSTP-Rekey-Method")
	if p.RekeyMethod == "" {
		p.RekeyMethod = "none"
	}

	for _, f := range []struct {
		name string
		dst  *int
	}{
		{"X-CSTP-Base-MTU", &p.BaseMTU},
		{"X-CSTP-DPD", &p.DPD},
		{"X-CSTP-Keepalive", &p.Keepalive},
		{"X-CSTP-Idle-Timeout", &p.IdleTimeout},
		{"X-CSTP-Session-Timeout", &p.SessionTimeout},
		{"X-CSTP-Rekey-Time", &p.RekeyTime},
		{"X-DTLS-DPD", &p.DTLSDPD},
		{"X-DTLS-Keepalive", &p.DTLSKeepalive},
		{"X-DTLS-MTU", &p.DTLSMTU},
	} {
		if *f.dst, err = hr.seconds(f.name); err != nil {
			return nil, err
		}
	}

	if v := hr.get("X-DTLS-Port"); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("cstp: bad X-DTLS-Port %q", v)
		}
		p.DTLSPort = port
	}
	if v := hr.get("X-DTLS-App-ID"); v != "" {
		id, err := hex.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("cstp: bad X-DTLS-App-ID %q", v)
		}
		p.DTLSAppID = id
	}
	if v := hr.get("X-DTLS-Session-ID"); v != "" {
		if id, err := hex.DecodeString(v); err == nil {
			p.DTLSSessionID = id
		}
	}
	p.DTLSCipherSuite = hr.get("X-DTLS-CipherSuite")
	p.DTLS12CipherSuite = hr.get("X-DTLS12-CipherSuite")
	if p.DTLSCipherSuite == "" {
		p.DTLSCipherSuite = p.DTLS12CipherSuite
	}
	hr.used("X-CSTP-Version")
	p.Extra = hr.extra()
	return p, nil
}

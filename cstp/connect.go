package cstp

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
)

// TunnelPath is the path of the CONNECT request that turns the HTTPS
// connection into a CSTP tunnel. ocserv answers 404 to any other path.
const TunnelPath = "/CSCOSSLC/tunnel"

// UserAgent is the User-Agent kvpn sends. ocserv classifies clients by it
// (worker-http.c): "Open AnyConnect VPN Agent v" followed by a major
// version above 3 selects its openconnect dialect (config-auth login
// documents, IPv6 routes and DNS); version 3 or below gets the legacy bare
// <auth> documents, and an unknown agent gets no IPv6 routes or DNS. Use it
// on the login requests too.
const UserAgent = "Open AnyConnect VPN Agent v9.01 kvpn"

// ConnectRequest holds what a client says in its CONNECT request.
type ConnectRequest struct {
	Cookie         string       // webvpn cookie value
	Hostname       string       // X-CSTP-Hostname: the client's host name
	BaseMTU, MTU   int          // X-CSTP-Base-MTU (link MTU), X-CSTP-MTU (tunnel MTU)
	PrevAddress    netip.Addr   // X-CSTP-Address on reconnect (invalid = none)
	PrevAddressIP6 netip.Prefix // X-CSTP-Address-IP6 (optional)
	// DTLSCipherSuite is the X-DTLS-CipherSuite list, e.g. "PSK-NEGOTIATE";
	// empty means the header is omitted and no DTLS is offered. ocserv
	// enables PSK DTLS when the list contains the PSK-NEGOTIATE token, and
	// then needs no X-DTLS-Master-Secret.
	DTLSCipherSuite string
	// DTLS12CipherSuite is Cisco's X-DTLS12-CipherSuite list (OpenSSL
	// names, legacy DTLS 1.2), DTLSMasterSecret the X-DTLS-Master-Secret
	// (96 hex digits) the legacy DTLS mode resumes with. Both are sent
	// only when set.
	DTLS12CipherSuite string
	DTLSMasterSecret  string
	// Extra holds vendor extension headers (X-Kvpn-*) to send, or, when
	// parsed, every X- header that ParseConnectRequest did not consume.
	// May be nil.
	Extra http.Header
}

// WriteTo writes the complete CONNECT request, ending with the blank line,
// in a single Write. host is the Host header value ("name" or "name:port",
// as openconnect sends it). The header names are spelled the way
// openconnect spells them; ocserv looks them up case-sensitively
// (http-heads.gperf). The request carries only the webvpn cookie, which is
// all ocserv expects.
func (r *ConnectRequest) WriteTo(w io.Writer, host string) error {
	if r.Cookie == "" {
		return errors.New("cstp: CONNECT request without a cookie")
	}
	hw := headerWriter{b: make([]byte, 0, 512)}
	hw.b = append(hw.b, "CONNECT "+TunnelPath+" HTTP/1.1\r\n"...)
	hw.add("Host", host)
	hw.add("User-Agent", UserAgent)
	hw.add("Cookie", "webvpn="+r.Cookie)
	hw.add("X-CSTP-Version", "1")
	if r.Hostname != "" {
		hw.add("X-CSTP-Hostname", r.Hostname)
	}
	if r.BaseMTU > 0 {
		hw.add("X-CSTP-Base-MTU", strconv.Itoa(r.BaseMTU))
	}
	if r.MTU > 0 {
		hw.add("X-CSTP-MTU", strconv.Itoa(r.MTU))
	}
	// ocserv withholds an address family the client does not list here,
	// and without the Full-IPv6 capability it sends IPv6 the legacy way
	// (X-CSTP-Address + X-CSTP-Netmask) and no IPv6 routes or DNS.
	hw.add("X-CSTP-Address-Type", "IPv6,IPv4")
	hw.add("X-CSTP-Full-IPv6-Capability", "true")
	if r.PrevAddress.IsValid() {
		hw.add("X-CSTP-Address", r.PrevAddress.String())
	}
	if r.PrevAddressIP6.IsValid() {
		hw.add("X-CSTP-Address-IP6", r.PrevAddressIP6.String())
	}
	if r.DTLSMasterSecret != "" {
		hw.add("X-DTLS-Master-Secret", r.DTLSMasterSecret)
	}
	if r.DTLS12CipherSuite != "" {
		hw.add("X-DTLS12-CipherSuite", r.DTLS12CipherSuite)
	}
	if r.DTLSCipherSuite != "" {
		hw.add("X-DTLS-CipherSuite", r.DTLSCipherSuite)
	}
	hw.addExtra(r.Extra)
	if hw.err != nil {
		return hw.err
	}
	hw.b = append(hw.b, "\r\n"...)
	_, err := w.Write(hw.b)
	return err
}

// ParseConnectRequest extracts a ConnectRequest from a parsed request (from
// http.ReadRequest on the TLS connection). The method must be CONNECT and
// the path TunnelPath, and the request must carry a webvpn cookie. Numeric
// headers are read leniently, like ocserv's atoi: a missing or malformed
// MTU is 0 and an unparsable previous address is ignored, leaving the
// server to apply its defaults.
func ParseConnectRequest(req *http.Request) (*ConnectRequest, error) {
	if req.Method != http.MethodConnect {
		return nil, fmt.Errorf("cstp: tunnel request method is %q, want CONNECT", req.Method)
	}
	path := req.RequestURI
	if req.URL != nil && req.URL.Path != "" {
		path = req.URL.Path
	}
	if path != TunnelPath {
		return nil, fmt.Errorf("cstp: tunnel request path is %q, want %s", path, TunnelPath)
	}
	c, err := req.Cookie("webvpn")
	if err != nil || c.Value == "" {
		return nil, errors.New("cstp: tunnel request has no webvpn cookie")
	}
	hr := headerReader{h: req.Header}
	r := &ConnectRequest{
		Cookie:            c.Value,
		Hostname:          hr.get("X-CSTP-Hostname"),
		BaseMTU:           lenientInt(hr.get("X-CSTP-Base-MTU")),
		MTU:               lenientInt(hr.get("X-CSTP-MTU")),
		DTLSCipherSuite:   hr.get("X-DTLS-CipherSuite"),
		DTLS12CipherSuite: hr.get("X-DTLS12-CipherSuite"),
		DTLSMasterSecret:  hr.get("X-DTLS-Master-Secret"),
	}
	if a, err := parseAddr(hr.get("X-CSTP-Address")); err == nil {
		r.PrevAddress = a
	}
	if p, err := netip.ParsePrefix(hr.get("X-CSTP-Address-IP6")); err == nil {
		r.PrevAddressIP6 = p
	}
	hr.used("X-CSTP-Version")
	hr.used("X-CSTP-Address-Type")
	hr.used("X-CSTP-Full-IPv6-Capability")
	r.Extra = hr.extra()
	return r, nil
}

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
	if hw.err != nil {
		return hw.err
	}
	hw.b = append(hw.b, "\r\n"...)
	_, err := w.Write(hw.b)
	return err
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

// headerWriter renders "Name: value\r\n" lines, rejecting names and values
// that would corrupt the header block.
type headerWriter struct {
	b   []byte
	err error
}

func (hw *headerWriter) add(name, value string) {
	if hw.err != nil {
		return
	}
	if !validHeaderName(name) {
		hw.err = fmt.Errorf("cstp: invalid header name %q", name)
		return
	}
	if !validHeaderValue(value) {
		hw.err = fmt.Errorf("cstp: invalid value for header %s: %q", name, value)
		return
	}
	hw.b = append(hw.b, name...)
	hw.b = append(hw.b, ": "...)
	hw.b = append(hw.b, value...)
	hw.b = append(hw.b, "\r\n"...)
}

// addExtra writes extension headers in sorted order, so output is
// deterministic.
func (hw *headerWriter) addExtra(h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			hw.add(k, v)
		}
	}
}

func (hw *headerWriter) addRoutes(kind string, routes []netip.Prefix) {
	for _, r := range routes {
		if !r.IsValid() {
			continue
		}
		if r.Addr().Is4() {
			hw.add("X-CSTP-Split-"+kind, formatRoute(r))
		} else {
			hw.add("X-CSTP-Split-"+kind+"-IP6", formatRoute(r))
		}
	}
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 tchar).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as a header value: no
// control characters other than tab (so no CR/LF header injection), which is
// also what Go's own header parser accepts.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headerReader looks up headers by canonical name and remembers which ones
// it consumed, so the rest can be returned as Extra.
type headerReader struct {
	h    http.Header
	seen map[string]bool
}

func (hr *headerReader) used(name string) string {
	k := textproto.CanonicalMIMEHeaderKey(name)
	if hr.seen == nil {
		hr.seen = map[string]bool{}
	}
	hr.seen[k] = true
	return k
}

// get returns the first value of a header, trimmed.
func (hr *headerReader) get(name string) string {
	if v := hr.h[hr.used(name)]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// all returns every value of a header, trimmed.
func (hr *headerReader) all(name string) []string {
	v := hr.h[hr.used(name)]
	out := make([]string, len(v))
	for i, s := range v {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

// seconds parses a non-negative number header; absent, empty or "none"
// (ocserv's spelling for no timeout) is 0.
func (hr *headerReader) seconds(name string) (int, error) {
	v := hr.get(name)
	if v == "" || v == "none" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("cstp: bad %s %q", name, v)
	}
	return n, nil
}

func (hr *headerReader) routes(names ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, name := range names {
		for _, v := range hr.all(name) {
			r, err := parseRoute(v)
			if err != nil {
				return nil, fmt.Errorf("cstp: bad route syntax in %s %q: %v", name, v, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// extra returns the X- headers not consumed, or nil.
func (hr *headerReader) extra() http.Header {
	var out http.Header
	for k, v := range hr.h {
		if hr.seen[k] || len(k) < 2 || !strings.EqualFold(k[:2], "X-") {
			continue
		}
		if out == nil {
			out = http.Header{}
		}
		out[k] = slices.Clone(v)
	}
	return out
}

// lenientInt parses a non-negative number the way a C atoi-based parser
// would accept it, returning 0 for anything unusable.
func lenientInt(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// parseAddr parses an IP address without zone, unmapping IPv4-in-IPv6.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("zoned address")
	}
	return a.Unmap(), nil
}

// parseRoute parses a split route: "ADDR/DOTTED-MASK" or "ADDR/LEN" for
// IPv4, "ADDR/LEN" for IPv6, or a bare address (a host route). The result
// is masked, so it can be handed to the routing table as is.
func parseRoute(s string) (netip.Prefix, error) {
	addrPart, maskPart, hasMask := strings.Cut(s, "/")
	a, err := parseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, errors.New("bad address")
	}
	n := a.BitLen()
	switch {
	case !hasMask:
	case a.Is4() && strings.Contains(maskPart, "."):
		m, err := parseAddr(maskPart)
		if err != nil || !m.Is4() {
			return netip.Prefix{}, errors.New("bad netmask")
		}
		var ok bool
		if n, ok = maskLen(m); !ok {
			return netip.Prefix{}, errors.New("non-contiguous netmask")
		}
	default:
		if maskPart == "" || len(maskPart) > 3 || strings.Trim(maskPart, "0123456789") != "" {
			return netip.Prefix{}, errors.New("bad prefix length")
		}
		n, _ = strconv.Atoi(maskPart)
		if n > a.BitLen() {
			return netip.Prefix{}, errors.New("prefix length out of range")
		}
	}
	return netip.PrefixFrom(a, n).Masked(), nil
}

// maskLen returns the prefix length of a contiguous IPv4 netmask.
func maskLen(m netip.Addr) (int, bool) {
	b := m.As4()
	v := binary.BigEndian.Uint32(b[:])
	n := bits.LeadingZeros32(^v)
	return n, v<<n == 0
}

// formatRoute renders a route the way ocserv does: IPv4 as
// ADDR/DOTTED-MASK, IPv6 as ADDR/LEN.
func formatRoute(p netip.Prefix) string {
	p = p.Masked()
	if !p.Addr().Is4() {
		return p.String()
	}
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-p.Bits()))
	return p.Addr().String() + "/" + netip.AddrFrom4(m).String()
}

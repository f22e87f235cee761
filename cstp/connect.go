package cstp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
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
	return hw.finish(w)
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

package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"kvpn/cstp"
	"kvpn/cstp/cstptest"
)

// runBadClient is the "bad" helper mode: it misbehaves towards the server
// at ADDR in the way named by its second argument, and prints what the
// server did ("status N" or "closed").
//
//	bad ADDR not-protocol USER PASS   a TLS request that is not the protocol
//	bad ADDR bad-frame USER PASS      log in, CONNECT, then a malformed CSTP header
//	bad ADDR oversized USER PASS      log in, CONNECT, then a DATA frame > MTU
//	bad ADDR tampered USER PASS       log in, CONNECT with one cookie character changed
//	bad ADDR truncated USER PASS      log in, CONNECT with the cookie cut short
//	bad ADDR garbage USER PASS        log in, CONNECT with a cookie that is not one
//	bad ADDR legacy-short-secret USER PASS  CONNECT asking for legacy DTLS with a
//	                                  short X-DTLS-Master-Secret, then ping over CSTP
//	bad ADDR legacy-nonhex-secret USER PASS  the same with 96 characters that are not hex
//	bad ADDR legacy-unknown-suites USER PASS  a good secret, only unknown suite names
//
// The legacy modes print the DTLS headers of the CONNECT answer
// ("dtls-offered" or "no-dtls") and "ping ok" once an ICMP echo to the
// server's tunnel address came back as CSTP DATA.
func runBadClient(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "bad: want ADDR MODE USER PASS")
		return 2
	}
	addr, mode, user, pass := args[0], args[1], args[2], args[3]
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad:", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// Large enough for any CSTP frame.
	br := bufio.NewReaderSize(c, cstp.HeaderLen+cstp.MaxPayload)
	do := func(req string, method string) (*http.Response, []byte) {
		if _, err := io.WriteString(c, req); err != nil {
			fmt.Println("closed")
			os.Exit(0)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			fmt.Println("closed")
			os.Exit(0)
		}
		if method == http.MethodConnect {
			// The tunnel follows the headers: there is no body to read.
			return resp, nil
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	post := func(path string, body []byte) (*http.Response, []byte) {
		return do(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s",
			path, len(body), body), http.MethodPost)
	}
	if mode == "not-protocol" {
		resp, _ := do("GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", http.MethodGet)
		fmt.Printf("status %d\n", resp.StatusCode)
		awaitClose(br)
		return 0
	}
	post("/", cstp.InitRequest("https://x/", "v9.01"))
	resp, _ := post("/auth", cstp.AuthReply([]cstp.FormInput{
		{Type: "text", Name: "username", Value: user}, {Type: "password", Name: "password", Value: pass}}, nil))
	var cookie string
	for _, ck := range resp.Cookies() {
		if ck.Name == "webvpn" {
			cookie = ck.Value
		}
	}
	if cookie == "" {
		fmt.Fprintln(os.Stderr, "bad: login failed")
		return 1
	}
	if bad, ok := badCookie(mode, cookie); ok {
		var b bytes.Buffer
		(&cstp.ConnectRequest{Cookie: bad, Hostname: "bad", BaseMTU: 1500, MTU: 1400}).WriteTo(&b, "x")
		resp, _ := do(b.String(), http.MethodConnect)
		fmt.Printf("status %d\n", resp.StatusCode)
		return 0
	}
	if req, ok := legacyConnect(mode, cookie); ok {
		var b bytes.Buffer
		req.WriteTo(&b, "x")
		resp, _ := do(b.String(), http.MethodConnect)
		if resp.StatusCode != 200 {
			fmt.Fprintln(os.Stderr, "bad: CONNECT:", resp.Status)
			return 1
		}
		if resp.Header.Get("X-DTLS-Session-ID") != "" || resp.Header.Get("X-DTLS-Port") != "" {
			fmt.Println("dtls-offered")
		} else {
			fmt.Println("no-dtls")
		}
		addr, err := netip.ParseAddr(resp.Header.Get("X-CSTP-Address"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad: X-CSTP-Address:", err)
			return 1
		}
		if err := cstpPing(c, br, addr, netip.MustParseAddr(tunnelServer)); err != nil {
			fmt.Fprintln(os.Stderr, "bad: ping over CSTP:", err)
			return 1
		}
		fmt.Println("ping ok")
		return 0
	}
	var b bytes.Buffer
	(&cstp.ConnectRequest{Cookie: cookie, Hostname: "bad", BaseMTU: 1500, MTU: 1400}).WriteTo(&b, "x")
	if resp, _ := do(b.String(), http.MethodConnect); resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, "bad: CONNECT:", resp.Status)
		return 1
	}
	switch mode {
	case "bad-frame":
		c.Write([]byte("XTF\x01\x00\x04\x00\x00abcd"))
	case "oversized":
		c.Write(cstp.AppendFrame(nil, cstp.TypeData, make([]byte, 9000)))
	default:
		fmt.Fprintln(os.Stderr, "bad: unknown mode", mode)
		return 2
	}
	awaitClose(br)
	return 0
}

// badCookie spoils a valid cookie the way mode says.
func badCookie(mode, cookie string) (string, bool) {
	switch mode {
	case "tampered":
		i := len(cookie) / 2
		c := byte('A')
		if cookie[i] == c {
			c = 'B'
		}
		return cookie[:i] + string(c) + cookie[i+1:], true
	case "truncated":
		return cookie[:len(cookie)-8], true
	case "garbage":
		return "not-a-cookie!", true
	}
	return "", false
}

// legacyConnect is the CONNECT of a legacy mode: openconnect's legacy
// DTLS headers (no PSK-NEGOTIATE) spoiled the way mode says.
func legacyConnect(mode, cookie string) (*cstp.ConnectRequest, bool) {
	r := &cstp.ConnectRequest{Cookie: cookie, Hostname: "bad", BaseMTU: 1500, MTU: 1400,
		DTLSCipherSuite:   "OC-DTLS1_2-AES128-GCM:AES128-SHA",
		DTLS12CipherSuite: "AES128-GCM-SHA256",
		DTLSMasterSecret:  strings.Repeat("5a", 48),
	}
	switch mode {
	case "legacy-short-secret":
		r.DTLSMasterSecret = "5a5a5a5a"
	case "legacy-nonhex-secret":
		r.DTLSMasterSecret = strings.Repeat("zz", 48)
	case "legacy-unknown-suites":
		r.DTLSCipherSuite, r.DTLS12CipherSuite = "NO-SUCH-SUITE:RC4-MD5", "ECDHE-ECDSA-NULL-SHA"
	default:
		return nil, false
	}
	return r, true
}

// cstpPing sends an ICMP echo request from src to dst as a CSTP DATA
// frame and waits for the echo reply among the frames that come back.
func cstpPing(w io.Writer, br *bufio.Reader, src, dst netip.Addr) error {
	const id, seq = 0x6b76, 1
	icmp := []byte{8, 0, 0, 0, id >> 8, id & 0xff, 0, seq, 'k', 'v', 'p', 'n'}
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
	ip := make([]byte, 20, 20+len(icmp))
	ip[0], ip[8], ip[9] = 0x45, 64, 1 // IPv4, TTL, ICMP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
	ip = append(ip, icmp...)
	if _, err := w.Write(cstp.AppendFrame(nil, cstp.TypeData, ip)); err != nil {
		return err
	}
	for {
		typ, p, err := cstptest.ReadFrame(br)
		if err != nil {
			return err
		}
		// An echo reply (type 0) from dst with our id.
		if typ == cstp.TypeData && len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 {
			hl := int(p[0]&0x0f) * 4
			if len(p) >= hl+8 && p[hl] == 0 && binary.BigEndian.Uint16(p[hl+4:]) == id &&
				netip.AddrFrom4([4]byte(p[12:16])) == dst {
				return nil
			}
		}
	}
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// awaitClose reads (discarding frames such as keepalives) until the server
// closes the connection, and prints "closed".
func awaitClose(br *bufio.Reader) {
	io.Copy(io.Discard, br)
	fmt.Println("closed")
}

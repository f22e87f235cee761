package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"kvpn/cstp"
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
	br := bufio.NewReader(c)
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

// awaitClose reads (discarding frames such as keepalives) until the server
// closes the connection, and prints "closed".
func awaitClose(br *bufio.Reader) {
	io.Copy(io.Discard, br)
	fmt.Println("closed")
}

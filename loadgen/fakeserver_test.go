package loadgen

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"kvpn/certs"
	"kvpn/cstp"
	"kvpn/cstp/cstptest"
)

// fakeServer is a minimal OpenConnect server for the failure paths a real
// vpnd does not take on demand: it logs anyone in, answers CONNECT with
// DPD 1 s and no DTLS, then hands the tunnel to tunnel.
type fakeServer struct {
	url *url.URL
	pin string
}

func newFakeServer(t *testing.T, tunnel func(c net.Conn, br *bufio.Reader)) *fakeServer {
	return newFakeServerParams(t, nil, tunnel)
}

// newFakeServerParams lets edit change the CONNECT answer.
func newFakeServerParams(t *testing.T, edit func(*cstp.TunnelParams), tunnel func(c net.Conn, br *bufio.Reader)) *fakeServer {
	t.Helper()
	dir := t.TempDir()
	cert, _, err := certs.LoadOrCreate(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fakeServe(c, edit, tunnel)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	u, _ := url.Parse("https://" + ln.Addr().String())
	return &fakeServer{url: u, pin: certs.Pin(cert.Leaf)}
}

func fakeServe(c net.Conn, edit func(*cstp.TunnelParams), tunnel func(net.Conn, *bufio.Reader)) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		if req.Method == http.MethodConnect {
			p := &cstp.TunnelParams{Address: netip.MustParseAddr("10.9.0.2"), Netmask: netip.MustParseAddr("255.255.255.0"), MTU: 1400, DPD: 1}
			if edit != nil {
				edit(p)
			}
			if p.WriteResponse(c) != nil {
				return
			}
			tunnel(c, br)
			return
		}
		msg, err := cstp.ParseClientMessage(req.Header.Get("Content-Type"), body)
		if err != nil {
			return
		}
		doc, cookie := cstp.AuthForm("", "", true, true), ""
		if msg.Type == "auth-reply" {
			doc, cookie = cstp.AuthComplete(""), "Set-Cookie: webvpn=fake\r\n"
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n%s\r\n%s", len(doc), cookie, doc)
	}
}

func writeTestFrame(w io.Writer, t cstp.FrameType, payload []byte) error {
	b := make([]byte, cstp.HeaderLen+len(payload))
	cstp.PutHeader(b, t, len(payload))
	copy(b[cstp.HeaderLen:], payload)
	_, err := w.Write(b)
	return err
}

// TestDPDAnsweredThenTimeout: the generator answers the server's DPD
// request, and when the server then falls silent it ends the session as
// dpd-timeout after 2 x DPD.
func TestDPDAnsweredThenTimeout(t *testing.T) {
	answered := make(chan cstp.FrameType, 4)
	fs := newFakeServer(t, func(c net.Conn, br *bufio.Reader) {
		writeTestFrame(c, cstp.TypeDPDReq, []byte{1, 2, 3})
		for {
			typ, payload, err := cstptest.ReadFrame(br)
			if err != nil {
				return
			}
			if typ == cstp.TypeDPDResp && string(payload) == "\x01\x02\x03" {
				answered <- typ
			}
			// Silent from here on: no answer to the generator's DPDs.
		}
	})
	cfg := &Config{Server: fs.url, ServerCert: fs.pin, User: "u", Password: "p", Sessions: 1, Duration: 4 * time.Second}
	sum, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-answered:
	default:
		t.Fatal("the server's DPD request got no DPD-RESP with its payload")
	}
	if sum.DPDAnswered != 1 || sum.Failures[FailDPDTimeout] != 1 || sum.MaxUp != 1 || sum.DTLSNotOff != 1 {
		t.Fatalf("DPD answered %d, failures %v, max up %d, DTLS not offered %d", sum.DPDAnswered, sum.Failures, sum.MaxUp, sum.DTLSNotOff)
	}
}

// TestTerminateIsServerClosed: a TERMINATE from the server ends the
// session as server-closed.
func TestTerminateIsServerClosed(t *testing.T) {
	fs := newFakeServer(t, func(c net.Conn, br *bufio.Reader) {
		writeTestFrame(c, cstp.TypeTerminate, cstp.DisconnectPayload("bye"))
		io.Copy(io.Discard, br)
	})
	cfg := &Config{Server: fs.url, ServerCert: fs.pin, User: "u", Password: "p", Sessions: 1, Duration: time.Second, NoDTLS: true}
	sum, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failures[FailServerClosed] != 1 || sum.UpAtEnd != 0 || sum.Disconnects != 0 {
		t.Fatalf("failures %v, up at end %d, DISCONNECT sent %d", sum.Failures, sum.UpAtEnd, sum.Disconnects)
	}
}

// TestBadFrameIsProtocolError: bytes that are no CSTP frame end the
// session as protocol-error, without a panic.
func TestBadFrameIsProtocolError(t *testing.T) {
	fs := newFakeServer(t, func(c net.Conn, br *bufio.Reader) {
		c.Write([]byte("XTF\x01\x00\x00\x00\x00"))
		io.Copy(io.Discard, br)
	})
	cfg := &Config{Server: fs.url, ServerCert: fs.pin, User: "u", Password: "p", Sessions: 1, Duration: time.Second, NoDTLS: true}
	sum, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failures[FailProtocol] != 1 {
		t.Fatalf("failures %v", sum.Failures)
	}
}

// TestDTLSHandshakeFailureFallsBackToTLS: a DTLS offer nobody answers
// (the port is closed) counts dtls-handshake, and the session stays up on
// TLS.
func TestDTLSHandshakeFailureFallsBackToTLS(t *testing.T) {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := uc.LocalAddr().(*net.UDPAddr).Port
	uc.Close() // nothing listens there any more
	fs := newFakeServerParams(t, func(p *cstp.TunnelParams) {
		p.DPD = 0
		p.DTLSPort = port
		p.DTLSAppID = make([]byte, 32)
		p.DTLSCipherSuite = "PSK-NEGOTIATE"
	}, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	cfg := &Config{Server: fs.url, ServerCert: fs.pin, User: "u", Password: "p", Sessions: 1, Duration: time.Second}
	sum, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failures[FailDTLSHandshake] != 1 || sum.UpAtEnd != 1 || sum.DTLSUpAtEnd != 0 || sum.Disconnects != 1 {
		t.Fatalf("failures %v, up %d, DTLS %d, DISCONNECT sent %d", sum.Failures, sum.UpAtEnd, sum.DTLSUpAtEnd, sum.Disconnects)
	}
}

// TestRateAndLocalAddr: --rate spaces the logins (10 at 20/s cannot take
// less than 9 intervals), and --local-addr is every connection's source.
func TestRateAndLocalAddr(t *testing.T) {
	sources := make(chan string, 10)
	fs := newFakeServer(t, func(c net.Conn, br *bufio.Reader) {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		sources <- host
		io.Copy(io.Discard, br)
	})
	cfg := &Config{Server: fs.url, ServerCert: fs.pin, User: "u", Password: "p", Sessions: 10, Rate: 20,
		Duration: time.Millisecond, NoDTLS: true, LocalAddr: netip.MustParseAddr("127.0.0.2")}
	sum, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.MaxUp != 10 || len(sum.Failures) != 0 {
		t.Fatalf("max up %d, failures %v", sum.MaxUp, sum.Failures)
	}
	if min := 9 * time.Second / 20; sum.RampSeconds < min.Seconds() {
		t.Fatalf("10 logins at 20/s took %.3f s, less than %v", sum.RampSeconds, min)
	}
	for range 10 {
		if s := <-sources; s != "127.0.0.2" {
			t.Fatalf("connection from %s, want 127.0.0.2", s)
		}
	}
}

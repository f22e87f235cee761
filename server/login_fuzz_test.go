package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/record/recordtest"
)

// shortReads hands out at most 1000 bytes per Read: short reads, as TLS
// records arrive, exercise the head scanner's waiting for more.
type shortReads struct{ r io.Reader }

func (s shortReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 1000)]) }

// FuzzLoginPhase feeds bytes as the decrypted TLS stream of a connection
// that has not logged in: request heads, login XML, the throttle, the
// session limits and the CONNECT's cookie check. It must never panic, and
// every answer is a well-formed HTTP response.
func FuzzLoginPhase(f *testing.F) {
	for _, seed := range []string{
		"POST / HTTP/1.1\r\nHost: vpn\r\nContent-Type: application/xml\r\nContent-Length: " + itoa(len(initBody)) + "\r\n\r\n" + initBody,
		"POST / HTTP/1.1\r\nContent-Length: " + itoa(len(replyBody("alice", "secret"))) + "\r\n\r\n" + replyBody("alice", "secret"),
		"POST / HTTP/1.1\r\nContent-Length: " + itoa(len(replyBody("alice", "wrong"))) + "\r\n\r\n" + replyBody("alice", "wrong") +
			"CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nCookie: webvpn=AAAA\r\nX-CSTP-Version: 1\r\n\r\n",
		"POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<?xml\r\n0\r\n\r\n",
		"CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nX-CSTP-Base-MTU: 1500\r\n\r\nSTF\x01\x00\x04\x00\x00abcd",
		"GET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nX: " + strings.Repeat("a", cstp.MaxHeadBytes) + "\r\n\r\n",
		"POST /" + strings.Repeat("a", cstp.MaxStartLine) + " HTTP/1.1\r\n\r\n",
		"\r\n\r\n",
		"POST / HTTP/1.1\n\n",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	cfg := DefaultConfig(dir)
	if err := cfg.Validate(); err != nil {
		f.Fatal(err)
	}
	if err := auth.SetPassword(filepath.Join(dir, "passwd"), "alice", "secret"); err != nil {
		f.Fatal(err)
	}
	s := newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.ReloadPasswd(); err != nil {
		f.Fatal(err)
	}
	if err := s.loadTickets(); err != nil {
		f.Fatal(err)
	}
	// A cheap check in place of argon2id, so the fuzzer runs fast.
	s.verify = func(user, password string) bool { return user == "alice" && password == "secret" }
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		c := &recordtest.Stream{R: shortReads{bytes.NewReader(data)}, Record: func(p []byte) { out.Write(p) }}
		s.serveConn(context.Background(), c, s.log, func() {})
		if out := out.Bytes(); len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer is not HTTP: %q", out[:min(len(out), 64)])
		}
		for _, sess := range s.list() {
			sess.end("fuzz")
		}
	})
}

var itoa = strconv.Itoa

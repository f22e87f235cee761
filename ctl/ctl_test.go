package ctl

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRequest(t *testing.T) {
	good := []struct {
		in   string
		want Request
	}{
		{`{"command":"show users"}`, Request{Command: CmdShowUsers}},
		{`{"command":"show user","args":["alice"]}`, Request{Command: CmdShowUser, Args: []string{"alice"}}},
		{` {"command":"disconnect id","args":["12"]} ` + "\n", Request{Command: CmdDisconnectID, Args: []string{"12"}}},
		{`{"command":"reload"}`, Request{Command: CmdReload}},
	}
	for _, c := range good {
		got, err := ParseRequest([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got.Command != c.want.Command || strings.Join(got.Args, ",") != strings.Join(c.want.Args, ",") {
			t.Errorf("%s: got %+v, want %+v", c.in, got, c.want)
		}
	}
	bad := []struct{ in, wantErr string }{
		{``, "malformed request"},
		{`not json`, "malformed request"},
		{`{"command":"show users"`, "malformed request"},
		{`{"command":"show users"} {}`, "data after the JSON object"},
		{`{"command":"show users","extra":1}`, `unknown field "extra"`},
		{`{"command":"shutdown"}`, `unknown command "shutdown"`},
		{`{"command":"show user"}`, "want 1 argument(s), got 0"},
		{`{"command":"show users","args":["x"]}`, "want 0 argument(s), got 1"},
		{`{"command":"disconnect id","args":["abc"]}`, `bad session id "abc"`},
		{`{"command":"disconnect id","args":["0"]}`, `bad session id "0"`},
		{`{"command":"show user","args":[""]}`, "bad argument"},
		{`["show users"]`, "malformed request"},
		{`{"command":"show user","args":["` + strings.Repeat("a", MaxRequest) + `"]}`, "request too large"},
	}
	for _, c := range bad {
		_, err := ParseRequest([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%.60s: error %v, want one containing %q", c.in, err, c.wantErr)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"command":"show users"}`, `{"command":"show user","args":["alice"]}`,
		`{"command":"disconnect id","args":["18446744073709551615"]}`, `{}`, `[]`, `null`, `{"command":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRequest(data)
		if err != nil {
			return
		}
		// Whatever parses names a known command with the right arguments,
		// and survives a round trip.
		if n, ok := commands[r.Command]; !ok || n != len(r.Args) {
			t.Fatalf("accepted %+v", r)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRequest(again); err != nil {
			t.Fatalf("re-encoded request %s refused: %v", again, err)
		}
	})
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startSocket(t *testing.T, path string, h Handler) *Listener {
	t.Helper()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(h, quiet())
	t.Cleanup(func() { l.Close() })
	return l
}

// rawCall sends bytes as they are and returns the decoded reply.
func rawCall(t *testing.T, path string, data []byte, halfClose bool) Reply {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(data)
	if halfClose {
		c.(*net.UnixConn).CloseWrite()
	}
	var rep Reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		t.Fatalf("no reply to %.40q: %v", data, err)
	}
	return rep
}

func TestSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "vpnd.sock")
	var got []Request
	l := startSocket(t, path, HandlerFunc(func(r Request) Reply {
		got = append(got, r)
		if r.Command == CmdShowUser && r.Args[0] != "alice" {
			return Errorf("no such user %q", r.Args[0])
		}
		return Reply{OK: true, Users: []User{{ID: 1, User: "alice", BytesIn: 42}}}
	}))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	rep, err := Call(path, Request{Command: CmdShowUser, Args: []string{"alice"}})
	if err != nil || !rep.OK || len(rep.Users) != 1 || rep.Users[0].BytesIn != 42 {
		t.Fatalf("show user alice: %+v, %v", rep, err)
	}
	rep, err = Call(path, Request{Command: CmdShowUser, Args: []string{"bob"}})
	if err != nil || rep.OK || rep.Error != `no such user "bob"` {
		t.Fatalf("show user bob: %+v, %v", rep, err)
	}

	// Bad requests get an error reply and never reach the handler; the
	// socket keeps answering.
	n := len(got)
	for _, c := range []struct {
		data      string
		halfClose bool
		want      string
	}{
		{"garbage\n", false, "malformed request"},
		{`{"command":"format disk"}`, true, "unknown command"},
		{`{"command":"show users"`, true, "malformed request"},
		{`{"command":"show users","args":["` + strings.Repeat("x", 2*MaxRequest) + `"]}`, false, "request too large"},
	} {
		rep := rawCall(t, path, []byte(c.data), c.halfClose)
		if rep.OK || !strings.Contains(rep.Error, c.want) {
			t.Errorf("%.30q: reply %+v, want an error with %q", c.data, rep, c.want)
		}
	}
	if len(got) != n {
		t.Errorf("handler saw bad requests: %+v", got[n:])
	}
	// A valid request without half-close is answered too.
	if rep := rawCall(t, path, []byte(`{"command":"show users"}`), false); !rep.OK {
		t.Errorf("show users without half-close: %+v", rep)
	}

	// A second server on a live socket is refused.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another vpnd is running") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	// Close removes the file.
	l.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if _, err := Call(path, Request{Command: CmdShowUsers}); err == nil || !strings.Contains(err.Error(), "is vpnd running") {
		t.Errorf("Call without a server: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vpnd.sock")
	// A socket file nobody listens on, as a killed vpnd leaves it.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	startSocket(t, path, HandlerFunc(func(Request) Reply { return Reply{OK: true, Message: "fresh"} }))
	rep, err := Call(path, Request{Command: CmdReload})
	if err != nil || rep.Message != "fresh" {
		t.Fatalf("after replacing a stale socket: %+v, %v", rep, err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vpnd.sock")
	os.WriteFile(path, []byte("important"), 0o600)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "important" {
		t.Fatal("regular file was touched")
	}
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(Request) Reply

func (f HandlerFunc) HandleCtl(r Request) Reply { return f(r) }

package ctl

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOpsCommands(t *testing.T) {
	for _, c := range []struct {
		words []string
		want  Request
	}{
		{[]string{"show", "status"}, Request{Command: CmdShowStatus}},
		{[]string{"show", "sessions"}, Request{Command: CmdShowSessions}},
		{[]string{"show", "iroutes"}, Request{Command: CmdShowIRoutes}},
		{[]string{"show", "events"}, Request{Command: CmdShowEvents}},
		{[]string{"show", "id", "7"}, Request{Command: CmdShowID, Args: []string{"7"}}},
		{[]string{"show", "ip", "bans"}, Request{Command: CmdShowIPBans}},
		{[]string{"show", "ip", "ban", "points"}, Request{Command: CmdShowIPBanPoints}},
		{[]string{"unban", "ip", "192.0.2.1"}, Request{Command: CmdUnbanIP, Args: []string{"192.0.2.1"}}},
		{[]string{"unban", "ip", "2001:db8::1"}, Request{Command: CmdUnbanIP, Args: []string{"2001:db8::1"}}},
		{[]string{"show", "user", "ip"}, Request{Command: CmdShowUser, Args: []string{"ip"}}},
	} {
		got, err := Lookup(c.words)
		if err != nil || got.Command != c.want.Command || strings.Join(got.Args, ",") != strings.Join(c.want.Args, ",") {
			t.Errorf("%q: %+v, %v; want %+v", c.words, got, err, c.want)
		}
	}
	for _, c := range []struct {
		words   []string
		wantErr string
	}{
		{[]string{"show", "id", "x"}, `bad session id "x"`},
		{[]string{"show", "id"}, "want 1 argument"},
		{[]string{"unban", "ip", "example.com"}, "bad address"},
		{[]string{"show", "ip", "ban"}, "unknown command"},
		{[]string{"show", "ip", "bans", "x"}, "want 0 argument"},
	} {
		if _, err := Lookup(c.words); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%q: error %v, want %q", c.words, err, c.wantErr)
		}
	}
	if !Streaming(CmdShowEvents) || Streaming(CmdShowStatus) {
		t.Error("Streaming")
	}
}

// streamHandler answers show events with the events it is given.
type streamHandler struct {
	HandlerFunc
	events chan Event
	mu     sync.Mutex
	ended  bool
}

func (h *streamHandler) StreamCtl(ctx context.Context, req Request, send func(Reply) error) {
	defer func() {
		h.mu.Lock()
		h.ended = true
		h.mu.Unlock()
	}()
	if send(Reply{OK: true, Message: "streaming"}) != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-h.events:
			if send(Reply{OK: true, Event: &e}) != nil {
				return
			}
		}
	}
}

// TestStream: show events streams replies until the client stops; the
// server notices and ends the stream; plain requests still work.
func TestStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vpnd.sock")
	h := &streamHandler{
		HandlerFunc: func(r Request) Reply { return Reply{OK: true, Message: "plain"} },
		events:      make(chan Event, 4),
	}
	l := startSocket(t, path, h)
	ctx, cancel := context.WithCancel(context.Background())
	var got []Reply
	done := make(chan error, 1)
	go func() {
		done <- Stream(ctx, path, Request{Command: CmdShowEvents}, func(r Reply) {
			got = append(got, r)
			if len(got) == 3 {
				cancel()
			}
		})
	}()
	h.events <- Event{Type: EventConnect, ID: 1, User: "alice"}
	h.events <- Event{Type: EventEnd, ID: 1, User: "alice", Reason: "logout"}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end")
	}
	if len(got) != 3 || got[0].Message != "streaming" || got[1].Event.Type != EventConnect || got[2].Event.Reason != "logout" {
		t.Fatalf("stream: %+v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		ended := h.ended
		h.mu.Unlock()
		if ended {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server-side stream still running after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rep, err := Call(path, Request{Command: CmdShowStatus}); err != nil || rep.Message != "plain" {
		t.Fatalf("plain request after a stream: %+v, %v", rep, err)
	}
	// Close ends a stream in progress.
	go Stream(context.Background(), path, Request{Command: CmdShowEvents}, func(Reply) {})
	time.Sleep(100 * time.Millisecond)
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a stream")
	}
}

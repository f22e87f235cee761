package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvpn/ctl"
)

// closedWithin waits for the server to close c, at most d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("server did not close the connection in %s: %v", d, err)
	}
}

// TestLoginIdleTimeout: a connection that sends nothing, before its TLS
// handshake or after it, is closed at login-idle-timeout and counted;
// auth-timeout closes one that keeps sending slowly.
func TestLoginIdleTimeout(t *testing.T) {
	ls := newLoginServer(t, func(c *Config) {
		c.LoginIdleTimeout = 2
		c.AuthTimeout = 5
	})
	raw, err := net.Dial("tcp", ls.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	closedWithin(t, raw, 10*time.Second)
	waitFor(t, func() bool { return ls.Snapshot().Drops["login-idle-timeout"] == 1 })
	c := ls.dialTLS(t, "127.0.0.40")
	closedWithin(t, c, 10*time.Second)
	waitFor(t, func() bool { return ls.Snapshot().Drops["login-idle-timeout"] == 2 })
	// A login request every 300 ms is never idle: auth-timeout
	// ends it.
	c = ls.dialTLS(t, "127.0.0.40")
	start := time.Now()
	br := bufio.NewReader(c)
	for {
		if post(c, initBody, "") != nil {
			break
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		io.Copy(io.Discard, resp.Body)
		if time.Since(start) > 15*time.Second {
			t.Fatal("not closed at auth-timeout")
		}
		time.Sleep(300 * time.Millisecond)
	}
	if d := time.Since(start); d < 4*time.Second {
		t.Errorf("closed after %s, before auth-timeout", d)
	}
	waitFor(t, func() bool { return ls.Snapshot().Drops["auth-timeout"] == 1 })
	if _, cookie, err := ls.tryLogin("127.0.0.41", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("login: %v", err)
	}
}

// TestConnectionPointsBan: connections that never log in cost a point
// each and ban their address at max-ban-score (refused before the TLS
// handshake, listed by show ip bans, lifted by unban ip); logins cost
// nothing; malformed requests cost 10.
func TestConnectionPointsBan(t *testing.T) {
	ls := newLoginServer(t, nil)
	for range 85 {
		if _, cookie, err := ls.tryLogin("127.0.0.50", "alice", "secret"); err != nil || cookie == "" {
			t.Fatalf("login: %v", err)
		}
	}
	for range DefaultMaxBanScore {
		c, err := net.Dial("tcp", ls.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	bans := func(cmd string) []ctl.Ban {
		rep := ls.HandleCtl(ctl.Request{Command: cmd})
		if !rep.OK {
			t.Fatalf("%s: %s", cmd, rep.Error)
		}
		return rep.Bans
	}
	waitFor(t, func() bool { return len(bans(ctl.CmdShowIPBans)) == 1 })
	if b := bans(ctl.CmdShowIPBans)[0]; b.Address != "127.0.0.1" || b.Score != DefaultMaxBanScore || !b.Banned ||
		time.Until(b.Expires) > DefaultMinReauthTime*time.Second {
		t.Fatalf("ban: %+v", b)
	}
	if _, _, err := ls.tryLogin("127.0.0.1", "alice", "secret"); err == nil {
		t.Fatal("banned address logged in")
	}
	if ls.Snapshot().Drops["login-banned"] == 0 {
		t.Error("login-banned not counted")
	}
	if _, cookie, err := ls.tryLogin("127.0.0.50", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("login from another address: %v", err)
	}
	// show ip ban points lists every score; 127.0.0.50 logged in only.
	for _, b := range bans(ctl.CmdShowIPBanPoints) {
		if b.Address == "127.0.0.50" {
			t.Errorf("logins cost points: %+v", b)
		}
	}
	if rep := ls.HandleCtl(ctl.Request{Command: ctl.CmdUnbanIP, Args: []string{"127.0.0.1"}}); !rep.OK {
		t.Fatalf("unban: %+v", rep)
	}
	if rep := ls.HandleCtl(ctl.Request{Command: ctl.CmdUnbanIP, Args: []string{"127.0.0.1"}}); rep.OK {
		t.Fatal("second unban succeeded")
	}
	if _, cookie, err := ls.tryLogin("127.0.0.1", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("login after unban: %v", err)
	}
	// Malformed requests: 10 points each, 8 ban.
	for range 8 {
		c := ls.dialTLS(t, "127.0.0.51")
		c.Write([]byte("GARBAGE\r\n\r\n"))
		io.Copy(io.Discard, c)
	}
	waitFor(t, func() bool {
		ok, _ := ls.bans.Banned(netip.MustParseAddr("127.0.0.51"))
		return ok
	})
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestScripts: connect-script gets ocserv's environment once per session
// and its failure or timeout refuses the session (ended, address freed,
// counted); disconnect-script gets the totals when the session ends.
func TestScripts(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	connect := writeScript(t, dir, "connect", `env > `+out+`.$REASON.$ID; [ "$USERNAME" != mallory ] || exit 3`)
	disconnect := writeScript(t, dir, "disconnect", `env > `+out+`.$REASON.$ID`)
	slow := writeScript(t, dir, "slow", "exec sleep 30\n")
	ts := newTestServer(t, `ipv4-network = "10.77.0.0/24"
connect-script = "`+connect+`"
disconnect-script = "`+disconnect+`"
script-timeout = 1
`)
	real := netip.MustParseAddr("192.0.2.7")
	alice := ts.connect(t, "alice")
	if !ts.tunnelUp(alice, real, ts.log) || !ts.tunnelUp(alice, real, ts.log) {
		t.Fatal("connect-script refused alice")
	}
	env := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	got := env("env.connect.1")
	for _, want := range []string{"USERNAME=alice", "REASON=connect", "IP_REAL=192.0.2.7", "IP_REMOTE=" + alice.addr.String(),
		"ID=1", "IP_LOCAL=10.77.0.1"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("connect-script environment lacks %s:\n%s", want, got)
		}
	}
	inUse := ts.pool.InUse()
	mallory := ts.connect(t, "mallory")
	if ts.tunnelUp(mallory, real, ts.log) {
		t.Fatal("failing connect-script let mallory in")
	}
	if !mallory.ended || ts.pool.InUse() != inUse || ts.Snapshot().Drops["connect-script-failed"] != 1 {
		t.Errorf("refused session: ended %v, pool %d (was %d), counter %d", mallory.ended, ts.pool.InUse(), inUse,
			ts.Snapshot().Drops["connect-script-failed"])
	}
	if _, err := os.Stat(filepath.Join(dir, "env.disconnect.2")); err == nil {
		t.Error("disconnect-script ran for a session its connect-script refused")
	}
	alice.traffic.AddOut(3, 300)
	alice.end("logout")
	waitFor(t, func() bool { _, err := os.Stat(filepath.Join(dir, "env.disconnect.1")); return err == nil })
	waitFor(t, func() bool { return strings.Contains(env("env.disconnect.1"), "STATS_DURATION=") })
	got = env("env.disconnect.1")
	for _, want := range []string{"USERNAME=alice", "REASON=disconnect", "STATS_BYTES_OUT=300", "STATS_BYTES_IN=0", "IP_REMOTE=" + alice.addr.String()} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("disconnect-script environment lacks %s:\n%s", want, got)
		}
	}
	// A connect-script that outlives script-timeout refuses the session.
	ts.cfg.ConnectScript = slow
	bob := ts.connect(t, "bob")
	start := time.Now()
	if ts.tunnelUp(bob, real, ts.log) {
		t.Fatal("a connect-script past script-timeout let bob in")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("script-timeout 1s took %s", d)
	}
}

// TestCtlOps: show status, sessions, id, iroutes and the events stream.
func TestCtlOps(t *testing.T) {
	ts := newTestServer(t, siteConfig)
	events := make(chan ctl.Reply, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ts.StreamCtl(ctx, ctl.Request{Command: ctl.CmdShowEvents}, func(r ctl.Reply) error { events <- r; return nil })
		close(done)
	}()
	if r := <-events; !r.OK || r.Message == "" {
		t.Fatalf("stream start: %+v", r)
	}
	gwa := ts.connect(t, "gwa")
	rw := ts.connect(t, "road warrior")
	rep := ts.HandleCtl(ctl.Request{Command: ctl.CmdShowStatus})
	if !rep.OK || rep.Status.Sessions != 2 || rep.Status.Resumable != 2 || rep.Status.IRoutes != 2 || rep.Status.PID != os.Getpid() {
		t.Errorf("show status: %+v", rep.Status)
	}
	rep = ts.HandleCtl(ctl.Request{Command: ctl.CmdShowID, Args: []string{"1"}})
	if !rep.OK || len(rep.Users) != 1 || rep.Users[0].User != "gwa" || len(rep.Users[0].IRoutes) != 2 {
		t.Errorf("show id 1: %+v", rep)
	}
	if rep := ts.HandleCtl(ctl.Request{Command: ctl.CmdShowID, Args: []string{"9"}}); rep.OK {
		t.Error("show id of no session")
	}
	if rep := ts.HandleCtl(ctl.Request{Command: ctl.CmdShowSessions}); len(rep.Users) != 2 || rep.Users[1].User != "road warrior" {
		t.Errorf("show sessions: %+v", rep.Users)
	}
	rep = ts.HandleCtl(ctl.Request{Command: ctl.CmdShowIRoutes})
	routed := 0
	for _, r := range rep.IRoutes {
		if r.ID == gwa.id {
			routed++
		}
	}
	if len(rep.IRoutes) != 3 || routed != 2 {
		t.Errorf("show iroutes: %+v", rep.IRoutes)
	}
	rw.end("logout")
	select {
	case r := <-events:
		if e := r.Event; e == nil || e.Type != ctl.EventEnd || e.User != "road warrior" || e.Reason != "logout" || e.Address == "" {
			t.Errorf("event: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no end event")
	}
	cancel()
	<-done
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	if len(ts.ops.subs) != 0 {
		t.Error("subscriber left behind")
	}
}

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

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"

	"kvpn/radius"
)

// radiusUsers is the in-process RADIUS server's behaviour per user.
func radiusHandler(w layeh.ResponseWriter, r *layeh.Request) {
	if r.Code == layeh.CodeAccountingRequest {
		w.Write(r.Response(layeh.CodeAccountingResponse))
		return
	}
	user, pw := rfc2865.UserName_GetString(r.Packet), rfc2865.UserPassword_GetString(r.Packet)
	if pw == "" || (pw != "pw" && rfc2865.State_Get(r.Packet) == nil) {
		w.Write(r.Response(layeh.CodeAccessReject))
		return
	}
	p := r.Response(layeh.CodeAccessAccept)
	switch user {
	case "fixed":
		rfc2865.FramedIPAddress_Set(p, net.IPv4(10, 77, 0, 77))
		rfc2865.Class_Add(p, []byte("OU=sales;"))
	case "outside":
		rfc2865.FramedIPAddress_Set(p, net.IPv4(192, 0, 2, 1))
	case "site":
		rfc2865.FramedRoute_AddString(p, "10.200.0.0/16")
	case "badroute":
		rfc2865.FramedRoute_AddString(p, "10.77.0.0/25")
	case "otp":
		if st := rfc2865.State_Get(r.Packet); st == nil {
			p = r.Response(layeh.CodeAccessChallenge)
			rfc2865.State_SetString(p, "otp-state")
			rfc2865.ReplyMessage_SetString(p, "Enter the code from your token")
		} else if string(st) != "otp-state" || pw != "424242" {
			p = r.Response(layeh.CodeAccessReject)
		}
	}
	w.Write(p)
}

func newRadiusLoginServer(t *testing.T) *loginServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &layeh.PacketServer{SecretSource: layeh.StaticSecretSource([]byte("s3cret")), Handler: layeh.HandlerFunc(radiusHandler)}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	sf := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(sf, []byte("s3cret\n"), 0o600)
	ls := newLoginServer(t, func(c *Config) {
		c.Auth = AuthMethods{AuthRadius}
		c.Radius = &radius.Config{Server: []string{pc.LocalAddr().String()}, SecretFile: sf, Timeout: 1}
	})
	return ls
}

// radiusPost posts body with cookies and returns status, body and the
// Set-Cookie header.
func radiusPost(t *testing.T, ls *loginServer, body, cookie string) (string, string) {
	t.Helper()
	c := ls.dialTLS(t, "127.0.0.1")
	h := ""
	if cookie != "" {
		h = "Cookie: " + cookie + "\r\n"
	}
	if err := post(c, body, h); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.Header.Get("Set-Cookie")
}

func TestRadiusLogin(t *testing.T) {
	ls := newRadiusLoginServer(t)
	body, ck := radiusPost(t, ls, replyBody("fixed", "pw"), "")
	if !strings.Contains(body, `id="success"`) || !strings.HasPrefix(ck, "webvpn=") {
		t.Fatalf("login: %s %s", body, ck)
	}
	sess := ls.list()[0]
	if sess.addr != netip.MustParseAddr("10.77.0.77") || sess.RadiusGroups()[0] != "sales" {
		t.Fatalf("address %s groups %v", sess.addr, sess.RadiusGroups())
	}
	// The Framed-IP-Address is in use now: a second login is refused.
	body, _ = radiusPost(t, ls, replyBody("fixed", "pw"), "")
	if !strings.Contains(body, "Framed-IP-Address cannot be used") {
		t.Fatalf("second login: %s", body)
	}
	if ls.Snapshot().Drops["radius-framed-ip-refused"] != 1 || len(ls.list()) != 1 {
		t.Fatalf("drops %v sessions %d", ls.Snapshot().Drops, len(ls.list()))
	}
	body, _ = radiusPost(t, ls, replyBody("fixed", "wrong"), "")
	if !strings.Contains(body, "Login failed.") || ls.Counters.LoginFailures.Load() != 1 {
		t.Fatalf("wrong password: %s", body)
	}
}

func TestRadiusFramedIPOutsidePool(t *testing.T) {
	ls := newRadiusLoginServer(t)
	body, ck := radiusPost(t, ls, replyBody("outside", "pw"), "")
	if !strings.Contains(body, "Framed-IP-Address cannot be used") || strings.HasPrefix(ck, "webvpn=") {
		t.Fatalf("%s %s", body, ck)
	}
	if ls.Snapshot().Drops["radius-framed-ip-refused"] != 1 || len(ls.list()) != 0 || ls.pool.InUse() != 0 {
		t.Fatalf("drops %v sessions %d", ls.Snapshot().Drops, len(ls.list()))
	}
	// Nothing else is affected: another user logs in.
	if body, _ := radiusPost(t, ls, replyBody("plain", "pw"), ""); !strings.Contains(body, `id="success"`) {
		t.Fatalf("%s", body)
	}
}

func TestRadiusRoutes(t *testing.T) {
	ls := newRadiusLoginServer(t)
	if body, _ := radiusPost(t, ls, replyBody("site", "pw"), ""); !strings.Contains(body, `id="success"`) {
		t.Fatalf("%s", body)
	}
	sess := ls.list()[0]
	u := sess.radiusPolicy(ls.policy.Load().user("site"))
	if len(u.iroutes) != 1 || u.iroutes[0] != netip.MustParsePrefix("10.200.0.0/16") || !u.exclusive() {
		t.Fatalf("policy %+v", u)
	}
	body, _ := radiusPost(t, ls, replyBody("badroute", "pw"), "")
	if !strings.Contains(body, "RADIUS route cannot be given") || ls.Snapshot().Drops["radius-route-refused"] != 1 {
		t.Fatalf("%s", body)
	}
	sess.end("disconnected by the operator")
	if len(ls.rad.routes) != 0 {
		t.Fatal("routes of an ended session kept")
	}
}

func TestRadiusChallenge(t *testing.T) {
	ls := newRadiusLoginServer(t)
	body, ck := radiusPost(t, ls, replyBody("otp", "pw"), "")
	if !strings.Contains(body, `name="`+ChallengeField+`"`) || !strings.Contains(body, "Enter the code from your token") ||
		!strings.HasPrefix(ck, radiusContextCookie+"=") {
		t.Fatalf("challenge: %s %s", body, ck)
	}
	ctx := strings.Split(ck, ";")[0]
	answer := func(code string) string {
		return `<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="auth-reply"><auth><` +
			ChallengeField + `>` + code + `</` + ChallengeField + `></auth></config-auth>`
	}
	// A wrong code fails; the context is used up.
	if body, _ := radiusPost(t, ls, answer("000000"), ctx); !strings.Contains(body, "Login failed.") {
		t.Fatalf("wrong code: %s", body)
	}
	if body, _ := radiusPost(t, ls, answer("424242"), ctx); !strings.Contains(body, "took too long") {
		t.Fatalf("replayed context: %s", body)
	}
	_, ck = radiusPost(t, ls, replyBody("otp", "pw"), "")
	body, ck = radiusPost(t, ls, answer("424242"), strings.Split(ck, ";")[0])
	if !strings.Contains(body, `id="success"`) || !strings.HasPrefix(ck, "webvpn=") || ls.list()[0].user != "otp" {
		t.Fatalf("right code: %s %s", body, ck)
	}
}

func TestRadiusUnreachable(t *testing.T) {
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	sf := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(sf, []byte("s3cret\n"), 0o600)
	ls := newLoginServer(t, func(c *Config) {
		c.Auth = AuthMethods{AuthRadius}
		c.Radius = &radius.Config{Server: []string{dead}, SecretFile: sf, Timeout: 1}
	})
	body, _ := radiusPost(t, ls, replyBody("alice", "pw"), "")
	if !strings.Contains(body, "authentication server is unreachable") || ls.Snapshot().Drops["radius-unreachable"] != 1 {
		t.Fatalf("%s %v", body, ls.Snapshot().Drops)
	}
}

func TestRadiusConfig(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(sf, []byte("s3cret\n"), 0o600)
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Auth = AuthMethods{AuthRadius} }, "needs a [radius] table"},
		{func(c *Config) { c.Radius = &radius.Config{Server: []string{"h"}, SecretFile: sf} }, "only with auth"},
		{func(c *Config) {
			c.Auth = AuthMethods{AuthRadius, AuthPlain}
			c.Radius = &radius.Config{Server: []string{"h"}, SecretFile: sf}
		}, "use one"},
		{func(c *Config) { c.Auth = AuthMethods{AuthRadius}; c.Radius = &radius.Config{SecretFile: sf} }, "radius.server"},
	} {
		cfg := DefaultConfig(t.TempDir())
		c.edit(cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want %q, got %v", c.want, err)
		}
	}
	cfg := DefaultConfig(t.TempDir())
	cfg.Auth = AuthMethods{AuthCertificate, AuthRadius}
	cfg.CACert = "ca.pem"
	cfg.Radius = &radius.Config{Server: []string{"h"}, SecretFile: sf}
	if err := cfg.Validate(); err != nil || cfg.passwordAuth() || !cfg.askPassword() {
		t.Fatalf("certificate + radius: %v", err)
	}
}

func TestTerminateCause(t *testing.T) {
	for reason, want := range map[string]radius.TerminateCause{
		"client disconnected":          radius.CauseUserRequest,
		"cookie expired":               radius.CauseLostCarrier,
		"disconnected by the operator": radius.CauseAdminReset,
		"server shutting down":         radius.CauseNASReboot,
		reasonSessionTimout:            radius.CauseSessionTimeout,
		reasonRadiusIdle:               radius.CauseIdleTimeout,
	} {
		if got := terminateCause(reason); got != want {
			t.Errorf("%q: %v, want %v", reason, got, want)
		}
	}
}

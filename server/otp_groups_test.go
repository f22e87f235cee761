package server

import (
	"bufio"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
)

var otpSecret = hex.EncodeToString([]byte("12345678901234567890"))

// aaaServer is a login server whose password file gives alice the groups
// eng and ops and bob none, with the otp file text (if any) in force.
func aaaServer(t *testing.T, otpText string, edit func(*Config)) (*loginServer, *Config) {
	t.Helper()
	var cfg *Config
	ls := newLoginServer(t, func(c *Config) {
		if otpText != "" {
			c.OTPFile = filepath.Join(filepath.Dir(c.PasswdFile), "users.oath")
			if err := os.WriteFile(c.OTPFile, []byte(otpText), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if edit != nil {
			edit(c)
		}
		cfg = c
	})
	h, _ := auth.HashPassword("secret")
	os.WriteFile(cfg.PasswdFile, []byte("alice:eng,ops:"+h+"\nbob:*:"+h+"\n"), 0o600)
	set, err := BuildSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls.settings.Store(set)
	return ls, cfg
}

// exchange posts body (with cookie, if any) on c and returns the parsed
// answer and its Set-Cookie.
func exchange(t *testing.T, c *tls.Conn, br *bufio.Reader, body, cookie string) (*cstp.ServerMessage, string) {
	t.Helper()
	h := ""
	if cookie != "" {
		h = "Cookie: " + cookie + "\r\n"
	}
	if err := post(c, body, h); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	m, err := cstp.ParseServerMessage(b)
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m, resp.Header.Get("Set-Cookie")
}

func otpReply(code string) string {
	return `<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="auth-reply"><auth><secondary_password>` +
		code + `</secondary_password></auth></config-auth>`
}

func replyGroup(user, password, group string) string {
	return strings.Replace(replyBody(user, password), "</auth>", "</auth><group-select>"+group+"</group-select>", 1)
}

// loginOTP logs in with password and code on a fresh connection; it
// returns the final answer.
func (ls *loginServer) loginOTP(t *testing.T, password, code string) *cstp.ServerMessage {
	t.Helper()
	c := ls.dialTLS(t, "")
	br := bufio.NewReader(c)
	m, ck := exchange(t, c, br, replyBody("alice", password), "")
	if m.AuthID != "otp" {
		return m
	}
	if len(m.Inputs) != 1 || m.Inputs[0].Name != cstp.SecondaryPasswordField || !strings.HasPrefix(ck, otpContextCookie+"=") {
		t.Fatalf("second form: %+v, cookie %q", m, ck)
	}
	m, _ = exchange(t, c, br, otpReply(code), strings.Split(ck, ";")[0])
	return m
}

// TestOTPLogin: the password then the code; a replayed code, a wrong code,
// a code for no pending login, and a user without a token are refused and
// counted as failed logins.
func TestOTPLogin(t *testing.T) {
	ls, _ := aaaServer(t, "HOTP/T30 alice - "+otpSecret+"\n", nil)
	tok := ls.currentSettings().OTP.Token("alice")
	code, _ := tok.Code(0, time.Now())
	if m := ls.loginOTP(t, "wrong", code); m.AuthID != "main" || m.Error == "" {
		t.Fatalf("wrong password: %+v", m)
	}
	if m := ls.loginOTP(t, "secret", code); m.Type != "complete" {
		t.Fatalf("password and code: %+v", m)
	}
	fails := ls.Counters.LoginFailures.Load()
	if m := ls.loginOTP(t, "secret", code); m.Type == "complete" || m.Error == "" {
		t.Fatalf("replayed code accepted: %+v", m)
	}
	bad := fmt.Sprintf("%06d", (atoi(code)+1)%1000000)
	if m := ls.loginOTP(t, "secret", bad); m.Type == "complete" {
		t.Fatalf("wrong code accepted: %+v", m)
	}
	if got := ls.Counters.LoginFailures.Load() - fails; got != 2 {
		t.Fatalf("%d failures counted for a replayed and a wrong code, want 2", got)
	}
	// A code without the password step.
	c := ls.dialTLS(t, "")
	if m, _ := exchange(t, c, bufio.NewReader(c), otpReply(code), otpContextCookie+"=00"); m.Type == "complete" {
		t.Fatal("code without a pending login accepted")
	}
	// bob has no token: refused after his password.
	c = ls.dialTLS(t, "")
	if m, _ := exchange(t, c, bufio.NewReader(c), replyBody("bob", "secret"), ""); m.Type == "complete" || m.AuthID == "otp" {
		t.Fatalf("user without a token: %+v", m)
	}
}

func atoi(s string) int {
	n := 0
	for _, r := range s {
		n = n*10 + int(r-'0')
	}
	return n
}

// TestGroupSelection: the form lists default-select-group then
// select-group, the group chosen sticks to the session (and its cookie),
// the default group is the first of the password file's, and a group the
// user is not a member of is refused.
func TestGroupSelection(t *testing.T) {
	ls, _ := aaaServer(t, "", func(c *Config) {
		c.SelectGroup = []string{"eng[Engineering]", "ops", "sales"}
		c.DefaultSelectGroup = "DEFAULT"
	})
	c := ls.dialTLS(t, "")
	br := bufio.NewReader(c)
	m, _ := exchange(t, c, br, strings.Replace(initBody, "</config-auth>", "<group-select>ops</group-select></config-auth>", 1), "")
	if !slices.Equal(m.Options["group_list"], []string{"DEFAULT", "eng", "ops", "sales"}) || m.Inputs[0].Value != "ops" {
		t.Fatalf("form: %+v", m)
	}
	for _, tc := range []struct{ user, chosen, want string }{
		{"alice", "ops", "ops"}, {"alice", "", "eng"}, {"alice", "DEFAULT", "eng"}, {"bob", "", ""},
	} {
		m, _ := exchange(t, c, br, replyGroup(tc.user, "secret", tc.chosen), "")
		if m.Type != "complete" {
			t.Fatalf("%s in %q: %+v", tc.user, tc.chosen, m)
		}
		var got *Session
		for _, s := range ls.list() {
			if s.user == tc.user && (got == nil || s.id > got.id) {
				got = s
			}
		}
		if got.group != tc.want {
			t.Fatalf("%s choosing %q: group %q, want %q", tc.user, tc.chosen, got.group, tc.want)
		}
		ticket, err := ls.sealTicket(got)
		if err != nil {
			t.Fatal(err)
		}
		if tk, err := ls.tickets.OpenTicket(ticket); err != nil || tk.Group != tc.want {
			t.Fatalf("cookie's group: %+v, %v", tk, err)
		}
	}
	for _, tc := range []struct{ user, chosen string }{{"alice", "sales"}, {"bob", "eng"}} {
		if m, _ := exchange(t, c, br, replyGroup(tc.user, "secret", tc.chosen), ""); m.Type == "complete" || !strings.Contains(m.Error, "not a member") {
			t.Fatalf("%s chose %q: %+v", tc.user, tc.chosen, m)
		}
	}
}

// TestGroupSettingsMerge: global, then [groups.NAME], then [users.NAME].
func TestGroupSettingsMerge(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.Route = []string{"10.1.0.0/16"}
	cfg.DNS = []string{"10.1.0.53"}
	cfg.RestrictUserToRoutes = true
	off := false
	cfg.Groups = map[string]*GroupConfig{
		"eng":   {Route: []string{"10.2.0.0/16"}, NoRoute: []string{"10.2.9.0/24"}, DNS: []string{"10.2.0.53"}},
		"ops":   {RestrictUserToRoutes: &off},
		"empty": nil,
	}
	cfg.Users = map[string]*UserConfig{
		"carol": {Route: []string{"10.3.0.0/16"}},
		"gw":    {IRoute: []string{"192.168.50.0/24"}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := cfg.pol
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	for _, tc := range []struct {
		user, group    string
		routes, excl   []netip.Prefix
		dns            string
		restricted     bool
		reachesGroupNS bool
	}{
		{"dave", "", pfx("10.1.0.0/16"), nil, "", true, false},
		{"dave", "nosuch", pfx("10.1.0.0/16"), nil, "", true, false},
		{"dave", "eng", pfx("10.2.0.0/16"), pfx("10.2.9.0/24"), "10.2.0.53", true, true},
		{"dave", "ops", pfx("10.1.0.0/16"), nil, "", false, false},
		{"dave", "empty", pfx("10.1.0.0/16"), nil, "", true, false},
		{"carol", "eng", pfx("10.3.0.0/16"), pfx("10.2.9.0/24"), "10.2.0.53", true, true},
		{"gw", "eng", pfx("10.2.0.0/16"), pfx("10.2.9.0/24"), "10.2.0.53", true, true},
	} {
		u := p.userIn(tc.user, tc.group)
		if !slices.Equal(u.routes, tc.routes) || !slices.Equal(u.excludes, tc.excl) {
			t.Errorf("%s in %q: routes %v excludes %v, want %v %v", tc.user, tc.group, u.routes, u.excludes, tc.routes, tc.excl)
		}
		if got := fmt.Sprint(pushedDNS(u, nil)); tc.dns != "" && got != "["+tc.dns+"]" || tc.dns == "" && u.dns != nil {
			t.Errorf("%s in %q: dns %s, want %q", tc.user, tc.group, got, tc.dns)
		}
		if (u.allow != nil) != tc.restricted || u.allows(netip.MustParseAddr("10.2.0.53")) != (tc.reachesGroupNS || !tc.restricted) {
			t.Errorf("%s in %q: allow %v", tc.user, tc.group, u.allow)
		}
	}
	if u := p.userIn("gw", "eng"); len(u.iroutes) != 1 || !u.exclusive() {
		t.Errorf("gw keeps its iroutes in a group: %+v", u)
	}
	// Bad tables are refused with their keys named.
	bad := DefaultConfig(t.TempDir())
	bad.Groups = map[string]*GroupConfig{"x": {Route: []string{"10.0.0.1/8"}, DNS: []string{"nope"}}}
	bad.SelectGroup = []string{"a", "a"}
	bad.DefaultSelectGroup = "a"
	err := bad.Validate()
	for _, want := range []string{"groups.x.route", "groups.x.dns", "select-group: group \"a\" listed twice", "default-select-group"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}

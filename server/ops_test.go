package server

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kvpn/auth"
	"kvpn/ctl"
	"kvpn/dtls"
	"kvpn/netcfg"
	"kvpn/session"
	"kvpn/tun"
)

// opsServer is a Server without TUN device or sockets: enough for the
// session table, the counters, the control commands and reload.
func opsServer(t *testing.T) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if err := auth.SetPassword(pw, "alice", "alice-pw"); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "vpnd.toml")
	writeFile(t, cfgPath, `passwd-file = "`+pw+`"`+"\n"+`route = ["192.168.10.0/24"]`)
	cfg, err := LoadConfig(cfgPath, dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		throttle: auth.NewThrottle(nil), cookies: auth.NewCookieJar[*Session](nil),
		pool: newPool(cfg.pool), byAddr: map[netip.Addr]*Session{}, sessions: map[*Session]struct{}{},
		byAppID: map[[dtls.AppIDLen]byte]*Session{}, kroutes: map[netip.Prefix]*netcfg.Changes{},
		active: cfg, started: time.Now(),
	}
	s.addRoute = func(netip.Prefix) (*netcfg.Changes, error) { return netcfg.New(), nil }
	s.polMu.Lock()
	err = s.applyPolicy(cfg.pol)
	s.polMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	set, err := BuildSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.settings.Store(set)
	s.SetConfigSource(func() (*Config, error) { return LoadConfig(cfgPath, dir) })
	return s, cfgPath
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// opsLogin adds a session with a pool address, as login and CONNECT do.
func opsLogin(t *testing.T, s *Server, user string) *Session {
	t.Helper()
	sess := s.newSession(user, netip.MustParseAddr("192.0.2.7"))
	if _, err := sess.attach(nil, netip.Addr{}, netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	return sess
}

// sinkChannel is a channel whose writes succeed and vanish.
type sinkChannel struct{ session.Channel }

func (sinkChannel) WritePackets([][]byte, int) error { return nil }

func TestTrafficCounters(t *testing.T) {
	s, _ := opsServer(t)
	alice, bob := opsLogin(t, s, "alice"), opsLogin(t, s, "bob")

	// Out: what send hands to the channel, counted per batch, without
	// the headroom.
	pkts := make([][]byte, 3)
	for i := range pkts {
		pkts[i] = make([]byte, tun.Headroom+100*(i+1))
	}
	if err := alice.send(sinkChannel{}, pkts); err != nil {
		t.Fatal(err)
	}
	alice.traffic.AddIn(2, 1500)
	bob.traffic.AddIn(1, 84)

	users := s.Users()
	if len(users) != 2 || users[0].User != "alice" || users[1].User != "bob" {
		t.Fatalf("users: %+v", users)
	}
	if u := users[0]; u.PacketsOut != 3 || u.BytesOut != 600 || u.PacketsIn != 2 || u.BytesIn != 1500 || u.Address != "10.77.0.2" {
		t.Errorf("alice: %+v", u)
	}
	if u := users[0]; u.Connected || u.Transport != TransportNone {
		t.Errorf("alice has no channel but shows %q connected=%v", u.Transport, u.Connected)
	}
	snap := s.Snapshot()
	want := Totals{InPackets: 3, InBytes: 1584, OutPackets: 3, OutBytes: 600}
	if snap.Traffic != want {
		t.Errorf("totals %+v, want %+v", snap.Traffic, want)
	}
	if snap.Sessions[TransportNone] != 2 {
		t.Errorf("sessions %v", snap.Sessions)
	}

	// A session that ends keeps its traffic in the totals (counters never
	// go down).
	rep := s.HandleCtl(ctl.Request{Command: ctl.CmdDisconnectUser, Args: []string{"alice"}})
	if !rep.OK || !strings.Contains(rep.Message, "disconnected 1 session(s) of alice") {
		t.Fatalf("disconnect alice: %+v", rep)
	}
	if got := s.Snapshot().Traffic; got != want {
		t.Errorf("totals after alice left: %+v, want %+v", got, want)
	}
	if us := s.Users(); len(us) != 1 || us[0].User != "bob" {
		t.Errorf("after disconnect: %+v", us)
	}
	if st := s.HandleCtl(ctl.Request{Command: ctl.CmdShowStats}).Stats; st.Sessions != 1 || st.BytesIn != 1584 || st.Drops["spoofed"] != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestCtlErrors(t *testing.T) {
	s, _ := opsServer(t)
	bob := opsLogin(t, s, "bob")
	for _, c := range []struct {
		req  ctl.Request
		want string
	}{
		{ctl.Request{Command: ctl.CmdShowUser, Args: []string{"nosuch"}}, `unknown user "nosuch"`},
		{ctl.Request{Command: ctl.CmdShowUser, Args: []string{"alice"}}, `user "alice" has no session`},
		{ctl.Request{Command: ctl.CmdDisconnectUser, Args: []string{"nosuch"}}, `unknown user "nosuch"`},
		{ctl.Request{Command: ctl.CmdDisconnectID, Args: []string{"999"}}, "no session with id 999"},
		{ctl.Request{Command: "bogus"}, `unknown command "bogus"`},
	} {
		rep := s.HandleCtl(c.req)
		if rep.OK || !strings.Contains(rep.Error, c.want) {
			t.Errorf("%+v: %+v, want error %q", c.req, rep, c.want)
		}
	}
	rep := s.HandleCtl(ctl.Request{Command: ctl.CmdDisconnectID, Args: []string{"1"}})
	if !rep.OK || !bob.ended {
		t.Errorf("disconnect id 1: %+v, ended=%v", rep, bob.ended)
	}
}

func TestReload(t *testing.T) {
	s, cfgPath := opsServer(t)
	dir := filepath.Dir(cfgPath)
	pw := s.cfg.PasswdFile
	before, beforePol := s.currentSettings(), s.policy.Load()

	// A broken file changes nothing.
	writeFile(t, cfgPath, `passwd-file = "`+pw+`"`+"\n"+`route = ["192.168.10.0/33"]`)
	if rep := s.HandleCtl(ctl.Request{Command: ctl.CmdReload}); rep.OK || !strings.Contains(rep.Error, "route") {
		t.Fatalf("broken config: %+v", rep)
	}
	writeFile(t, cfgPath, `passwd-file = "`+pw+`"`+"\n"+`listn = "x"`)
	if _, err := s.ReloadFromSource(); err == nil || !strings.Contains(err.Error(), `unknown key "listn"`) {
		t.Fatalf("unknown key: %v", err)
	}
	writeFile(t, cfgPath, `passwd-file = "`+filepath.Join(dir, "missing")+`"`)
	if _, err := s.ReloadFromSource(); err == nil || !strings.Contains(err.Error(), "password file") {
		t.Fatalf("missing password file: %v", err)
	}
	writeFile(t, cfgPath, `passwd-file = "`+pw+`"`+"\n"+`ipv4-network = "10.78.0.0/24"`)
	if _, err := s.ReloadFromSource(); err == nil || !strings.Contains(err.Error(), "ipv4-network") {
		t.Fatalf("new pool: %v", err)
	}
	if s.currentSettings() != before || s.policy.Load() != beforePol {
		t.Fatal("a failed reload replaced the settings or the policy")
	}

	// New routes, DNS and users apply; listen and mtu need a restart.
	if err := auth.SetPassword(pw, "bob", "bob-pw"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfgPath, `passwd-file = "`+pw+`"
route = ["192.168.20.0/24"]
dns = ["192.168.20.53"]
default-domain = "corp.example"
listen = "0.0.0.0:8443"
mtu = 1400`)
	rep := s.HandleCtl(ctl.Request{Command: ctl.CmdReload})
	if !rep.OK || !strings.Contains(rep.Message, "route") || len(rep.Warn) != 3 {
		t.Fatalf("reload: %+v", rep)
	}
	for _, k := range []string{"listen", "udp-listen", "mtu"} {
		if !slices.ContainsFunc(rep.Warn, func(w string) bool { return strings.HasPrefix(w, k+" changed") }) {
			t.Errorf("no restart warning for %s: %v", k, rep.Warn)
		}
	}
	p := s.currentSettings()
	if r := s.policy.Load().user("alice").routes; len(r) != 1 || r[0].String() != "192.168.20.0/24" {
		t.Errorf("routes after reload: %v", r)
	}
	if p.DNS[0].String() != "192.168.20.53" || p.DefaultDomain != "corp.example" {
		t.Errorf("settings after reload: %+v", p)
	}
	if !p.Passwd.Verify("bob", "bob-pw") || !p.Passwd.Verify("alice", "alice-pw") {
		t.Error("password file not re-read")
	}
	if s.cfg.MTU != DefaultMTU || s.cfg.Listen != DefaultListen {
		t.Error("a restart-only key was applied")
	}
	// The same file again: nothing applied, the restart keys still differ.
	res, err := s.ReloadFromSource()
	if err != nil || len(res.Applied) != 0 || len(res.Restart) != 3 {
		t.Errorf("second reload: %+v, %v", res, err)
	}

	// Site-to-site tables reload through the same path (the policy swap).
	writeFile(t, cfgPath, `passwd-file = "`+pw+`"
route = ["192.168.20.0/24"]
dns = ["192.168.20.53"]
default-domain = "corp.example"
listen = "0.0.0.0:8443"
mtu = 1400
[users.bob]
iroute = ["192.168.30.0/24"]`)
	res, err = s.ReloadFromSource()
	if err != nil || !slices.Equal(res.Applied, []string{"users"}) {
		t.Fatalf("reload with a users table: %+v, %v", res, err)
	}
	if _, ok := s.kroutes[netip.MustParsePrefix("192.168.30.0/24")]; !ok {
		t.Errorf("iroute not routed after reload: %v", s.kroutes)
	}
}

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	testUser     = "alice"
	testPassword = "correct horse battery staple"
	serverVeth   = "192.168.77.1"
	clientVeth   = "192.168.77.2"
	tunnelServer = "10.77.0.1"
)

// vpnServer is a running vpnd in its own namespace.
type vpnServer struct {
	ns     *netns
	dir    string
	ip     string
	pin    string
	proc   *proc
	args   []string // vpnd's command line, for restart
	ctl    string   // control socket path
	config string   // configuration file path
	passwd string   // password file path
}

// startServer writes a config (with extra TOML lines appended), a password
// file for testUser, and starts vpnd in ns.
func startServer(t *testing.T, ns *netns, ip string, extra string) *vpnServer {
	t.Helper()
	return startServerUsers(t, ns, ip, extra)
}

// startServerUsers is startServer with more users in the password file,
// all with testPassword.
func startServerUsers(t *testing.T, ns *netns, ip string, extra string, users ...string) *vpnServer {
	t.Helper()
	return startServerIn(t, ns, ip, t.TempDir(), "vpnd.toml", extra, users...)
}

// dpdSeconds is vpnd's DPD in the tests: 2 s, 8 s on an emulated CPU
// (see emulated).
func dpdSeconds() int {
	if emulated {
		return 8
	}
	return 2
}

// startServerIn is startServerUsers with the state directory and the
// config file's name given: several vpnd nodes sharing one directory
// share its certificate, password file and cookie key.
func startServerIn(t *testing.T, ns *netns, ip, dir, cfgName, extra string, users ...string) *vpnServer {
	t.Helper()
	s := &vpnServer{ns: ns, dir: dir, ip: ip}
	passwd := filepath.Join(s.dir, "passwd")
	for _, u := range append([]string{testUser}, users...) {
		if _, err := os.Stat(passwd); err == nil && u == testUser {
			continue // a node sharing the directory made it already
		}
		cmd := exec.Command(bins.vpnd, "passwd", "--file", passwd, u)
		cmd.Stdin = strings.NewReader(testPassword + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vpnd passwd %s: %v\n%s", u, err, out)
		}
	}
	// One control socket per node: nodes sharing the directory must not
	// find each other's.
	ctlPath := filepath.Join(s.dir, strings.TrimSuffix(cfgName, ".toml")+".sock")
	listen := `listen = "0.0.0.0:443"`
	if listenKey.MatchString(extra) {
		listen = "" // extra sets its own (an IPv6 one, say)
	}
	cfg := fmt.Sprintf(`%s
passwd-file = %q
server-cert = %q
server-key = %q
device = "kvpns0"
ctl-socket = %q
dpd = %d
keepalive = 1
cookie-timeout = 30
%s
`, listen, passwd, filepath.Join(s.dir, "cert.pem"), filepath.Join(s.dir, "key.pem"), ctlPath, dpdSeconds(), extra)
	cfgPath := filepath.Join(s.dir, cfgName)
	s.ctl, s.config, s.passwd = ctlPath, cfgPath, passwd
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{bins.vpnd, "serve", "--config", cfgPath, "--state-dir", s.dir}
	s.proc = ns.start(t, "vpnd", "", s.args...)
	s.proc.waitLog(t, "vpnd listening", 15*time.Second)
	out, err := exec.Command(bins.vpnd, "pin", "--cert", filepath.Join(s.dir, "cert.pem")).Output()
	if err != nil {
		t.Fatalf("vpnd pin: %v", err)
	}
	s.pin = strings.TrimSpace(string(out))
	return s
}

// restart stops vpnd with SIGTERM and starts it again with the same
// configuration and state directory.
func (s *vpnServer) restart(t *testing.T) {
	t.Helper()
	s.proc.stop(10 * time.Second)
	s.proc = s.ns.start(t, "vpnd (restarted)", "", s.args...)
	s.proc.waitLog(t, "vpnd listening", 15*time.Second)
}

// listenKey finds a listen setting in startServer's extra lines.
var listenKey = regexp.MustCompile(`(?m)^\s*listen\s*=`)

// vpnClient is a running vpnc.
type vpnClient struct {
	ns    *netns
	proc  *proc
	addr  string // tunnel address, known once up
	addr6 string // IPv6 tunnel address, if the server assigned one
}

var (
	upLine  = regexp.MustCompile(`tunnel up: address ([0-9.]+)/`)
	upLine6 = regexp.MustCompile(`tunnel up: address [0-9.]+/\d+, IPv6 ([0-9a-f:]+)/`)
)

// startClient runs vpnc in ns against s and, unless wantUp is false, waits
// for the tunnel to come up.
func startClient(t *testing.T, ns *netns, s *vpnServer, password string, wantUp bool, extra ...string) *vpnClient {
	t.Helper()
	return startClientEnv(t, ns, s, password, wantUp, nil, extra...)
}

// startClientEnv is startClient with extra environment variables for vpnc.
func startClientEnv(t *testing.T, ns *netns, s *vpnServer, password string, wantUp bool, env []string, extra ...string) *vpnClient {
	t.Helper()
	return startClientAs(t, ns, s, testUser, password, wantUp, env, extra...)
}

// startClientAs is startClientEnv for another user than testUser.
func startClientAs(t *testing.T, ns *netns, s *vpnServer, user, password string, wantUp bool, env []string, extra ...string) *vpnClient {
	t.Helper()
	args := append(append([]string{"env"}, env...), bins.vpnc, "connect", "-u", user, "--passwd-on-stdin", "--servercert", s.pin,
		"--state-dir", t.TempDir())
	args = append(args, extra...)
	args = append(args, "https://"+net.JoinHostPort(s.ip, "443"))
	c := &vpnClient{ns: ns}
	c.proc = ns.start(t, "vpnc", password+"\n", args...)
	if wantUp {
		c.proc.waitLog(t, "tunnel up", 20*time.Second)
		m := upLine.FindStringSubmatch(c.proc.Out.String())
		if m == nil {
			t.Fatalf("no address in vpnc output:\n%s", c.proc.Out.String())
		}
		c.addr = m[1]
		if m := upLine6.FindStringSubmatch(c.proc.Out.String()); m != nil {
			c.addr6 = m[1]
		}
	}
	return c
}

// topology is a server namespace and one client namespace on a veth.
type topology struct {
	srvNS, cliNS *netns
	srv          *vpnServer
}

func newTopology(t *testing.T, extra string) *topology {
	t.Helper()
	tp := &topology{srvNS: newNS(t, "srv"), cliNS: newNS(t, "cli")}
	link(t, tp.srvNS, serverVeth+"/24", tp.cliNS, clientVeth+"/24")
	tp.srv = startServer(t, tp.srvNS, serverVeth, extra)
	return tp
}

// ping pings dst from ns and fails the test unless replies come back.
func ping(t *testing.T, ns *netns, dst string, extra ...string) {
	t.Helper()
	args := append([]string{"ping", "-c", "3", "-i", "0.2", "-W", "2"}, extra...)
	ns.run(t, append(args, dst)...)
}

// routes returns the namespace's routing table, for before/after checks.
func routes(t *testing.T, ns *netns) string {
	t.Helper()
	return ns.run(t, "ip", "-4", "route", "show", "table", "all")
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"kvpn/ctl"
)

// runHTTPGet is the helper mode that fetches a URL from inside a
// namespace and prints the body.
func runHTTPGet(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "httpget: want URL")
		return 2
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpget:", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "httpget:", resp.Status)
		return 1
	}
	return 0
}

// vpndCtl runs `vpnd ctl` against s's control socket.
func vpndCtl(s *vpnServer, args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(bins.vpnd, append([]string{"ctl", "--socket", s.ctl}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return o.String(), e.String(), code
}

func mustCtl(t *testing.T, s *vpnServer, args ...string) string {
	t.Helper()
	out, errOut, code := vpndCtl(s, args...)
	if code != 0 {
		t.Fatalf("vpnd ctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// ctlUsers is `vpnd ctl --json show users`, by user name.
func ctlUsers(t *testing.T, s *vpnServer) map[string]ctl.User {
	t.Helper()
	var rep ctl.Reply
	if err := json.Unmarshal([]byte(mustCtl(t, s, "--json", "show", "users")), &rep); err != nil {
		t.Fatal(err)
	}
	m := map[string]ctl.User{}
	for _, u := range rep.Users {
		m[u.User] = u
	}
	return m
}

func addUser(t *testing.T, s *vpnServer, user, password string) {
	t.Helper()
	cmd := exec.Command(bins.vpnd, "passwd", "--file", s.passwd, user)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vpnd passwd %s: %v\n%s", user, err, out)
	}
}

func scrapeMetrics(t *testing.T, ns *netns, url string) map[string]*dto.MetricFamily {
	t.Helper()
	out, err := ns.try("env", helperEnv+"=httpget", bins.self, url)
	if err != nil {
		t.Fatalf("scraping %s: %v\n%s", url, err, out)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, out)
	}
	return mf
}

// sample returns the value of family name's sample with the given label.
func sample(t *testing.T, mf map[string]*dto.MetricFamily, name, label, value string) *dto.Metric {
	t.Helper()
	f := mf[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == label && l.GetValue() == value {
				return m
			}
		}
		if label == "" {
			return m
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return nil
}

// waitLogCount waits until s occurs n times in the process's output.
func waitLogCount(t *testing.T, p *proc, s string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s logging %q %d times", p.Name, s, n), func() error {
		if c := strings.Count(p.Out.String(), s); c < n {
			return fmt.Errorf("seen %d times", c)
		}
		return nil
	})
}

// TestOperatorTools runs vpnd with a control socket and metrics, two
// clients, and goes through what an operator does: list sessions, scrape
// metrics, disconnect a user, reload (broken and good), stop.
func TestOperatorTools(t *testing.T) {
	requireE2E(t)
	srvNS, ns1, ns2 := newNS(t, "srv"), newNS(t, "c1"), newNS(t, "c2")
	link(t, srvNS, serverVeth+"/24", ns1, clientVeth+"/24")
	link(t, srvNS, "192.168.78.1/24", ns2, "192.168.78.2/24")
	const metricsURL = "http://127.0.0.1:9109/metrics"
	srv := startServer(t, srvNS, serverVeth, `metrics-listen = "127.0.0.1:9109"
log-format = "json"`)
	srv.proc.waitLog(t, `"msg":"control socket listening"`, 5*time.Second)
	if fi, err := os.Stat(srv.ctl); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	// A second vpnd on the same socket refuses to start, and leaves the
	// running one alone.
	second := exec.Command(bins.vpnd, "serve", "--config", srv.config, "--state-dir", srv.dir)
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "another vpnd is running") {
		t.Fatalf("second vpnd on the same ctl-socket: %v\n%s", err, out)
	}

	// bob is added while vpnd runs, and `vpnd ctl reload` lets him in.
	addUser(t, srv, "bob", "bob's password")
	if out := mustCtl(t, srv, "reload"); !strings.Contains(out, "configuration reloaded") {
		t.Fatalf("ctl reload: %q", out)
	}
	srv2 := *srv
	srv2.ip = "192.168.78.1"
	alice := startClient(t, ns1, srv, testPassword, true)
	bob := startClientAs(t, ns2, &srv2, "bob", "bob's password", true, nil)
	ping(t, ns1, tunnelServer)
	ping(t, ns2, tunnelServer)

	// show users: both, with their addresses, remote addresses and traffic.
	eventually(t, 10*time.Second, "both sessions on DTLS with traffic", func() error {
		us := ctlUsers(t, srv)
		for _, c := range []struct {
			name, addr, remote string
		}{{"alice", alice.addr, clientVeth}, {"bob", bob.addr, "192.168.78.2"}} {
			u, ok := us[c.name]
			switch {
			case !ok:
				return fmt.Errorf("%s not listed: %+v", c.name, us)
			case u.Address != c.addr || !strings.HasPrefix(u.Remote, c.remote+":") || !u.Connected:
				return fmt.Errorf("%s: %+v", c.name, u)
			case u.BytesIn == 0 || u.BytesOut == 0 || u.PacketsIn < 3 || u.PacketsOut < 3:
				return fmt.Errorf("%s has no traffic counted: %+v", c.name, u)
			case u.Transport != "DTLS" || !u.DTLSFastPath || u.TLS == "" || u.TLSTX == "":
				return fmt.Errorf("%s transport: %+v", c.name, u)
			}
		}
		return nil
	})
	table := mustCtl(t, srv, "show", "users")
	for _, want := range []string{"USER", "alice", "bob", alice.addr, bob.addr, "DTLS", "tls tx="} {
		if !strings.Contains(table, want) {
			t.Errorf("show users table lacks %q:\n%s", want, table)
		}
	}
	if out := mustCtl(t, srv, "show", "user", "bob"); !strings.Contains(out, "address:") || !strings.Contains(out, bob.addr) {
		t.Errorf("show user bob:\n%s", out)
	}
	if out := mustCtl(t, srv, "show", "stats"); !strings.Contains(out, "sessions:") || !strings.Contains(out, "spoofed") {
		t.Errorf("show stats:\n%s", out)
	}

	// Metrics after the traffic.
	mf := scrapeMetrics(t, srvNS, metricsURL)
	if v := sample(t, mf, "kvpn_sessions", "transport", "dtls").GetGauge().GetValue(); v != 2 {
		t.Errorf("kvpn_sessions{transport=dtls} = %v, want 2", v)
	}
	for _, dir := range []string{"in", "out"} {
		if v := sample(t, mf, "kvpn_tunnel_packets_total", "direction", dir).GetCounter().GetValue(); v < 6 {
			t.Errorf("kvpn_tunnel_packets_total{direction=%s} = %v, want at least the 6 pings", dir, v)
		}
		if v := sample(t, mf, "kvpn_tunnel_bytes_total", "direction", dir).GetCounter().GetValue(); v < 6*84 {
			t.Errorf("kvpn_tunnel_bytes_total{direction=%s} = %v", dir, v)
		}
	}
	if v := sample(t, mf, "kvpn_logins_total", "", "").GetCounter().GetValue(); v != 2 {
		t.Errorf("kvpn_logins_total = %v, want 2", v)
	}
	for _, tr := range []string{"tls", "dtls"} {
		if n := sample(t, mf, "kvpn_handshake_seconds", "transport", tr).GetHistogram().GetSampleCount(); n < 2 {
			t.Errorf("%s handshakes observed: %d, want at least 2", tr, n)
		}
	}
	sample(t, mf, "kvpn_drops_total", "reason", "spoofed")

	// An unknown user: a clear error and exit code 1.
	out, errOut, code := vpndCtl(srv, "show", "user", "nosuch")
	if code != 1 || !strings.Contains(errOut, `unknown user "nosuch"`) {
		t.Errorf("show user nosuch: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A malformed request on the socket: an error reply, vpnd stays up.
	for _, bad := range []string{"{nonsense", `{"command":"rm -rf"}`, strings.Repeat("[", 10000)} {
		c, err := net.Dial("unix", srv.ctl)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(bad))
		c.(*net.UnixConn).CloseWrite()
		var rep ctl.Reply
		err = json.NewDecoder(c).Decode(&rep)
		c.Close()
		if err != nil || rep.OK || rep.Error == "" {
			t.Errorf("reply to %.20q: %+v, %v", bad, rep, err)
		}
	}
	if us := ctlUsers(t, srv); len(us) != 2 {
		t.Fatalf("after bad requests: %+v", us)
	}

	// disconnect user: bob's client is told (TERMINATE) and exits; alice
	// goes on.
	if out := mustCtl(t, srv, "disconnect", "user", "bob"); !strings.Contains(out, "disconnected 1 session(s) of bob") {
		t.Errorf("disconnect: %q", out)
	}
	if code := bob.proc.exitCode(t, 10*time.Second); code != 5 {
		t.Errorf("bob's vpnc exited %d, want 5", code)
	}
	if !strings.Contains(bob.proc.Out.String(), "disconnected by the operator") {
		t.Errorf("bob's vpnc did not see the TERMINATE reason:\n%s", bob.proc.Out.String())
	}
	ping(t, ns1, tunnelServer)
	if us := ctlUsers(t, srv); len(us) != 1 || us["alice"].User == "" {
		t.Errorf("after disconnect: %+v", us)
	}

	// SIGHUP with a broken file keeps the running configuration.
	good, err := os.ReadFile(srv.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srv.config, append(append([]byte{}, good...), "route = [\"10.1.0.0/33\"]\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.proc.Cmd.Process.Signal(syscall.SIGHUP)
	srv.proc.waitLog(t, "reload failed; keeping the running configuration", 5*time.Second)
	if !strings.Contains(srv.proc.Out.String(), "10.1.0.0/33") {
		t.Error("the reload error does not name the bad value")
	}
	ping(t, ns1, tunnelServer)
	if _, errOut, code := vpndCtl(srv, "reload"); code != 1 || !strings.Contains(errOut, "running configuration kept") {
		t.Errorf("ctl reload of a broken file: exit %d, %q", code, errOut)
	}

	// SIGHUP with the file fixed and a new user in the password file: the
	// new user logs in, alice's session is untouched.
	if err := os.WriteFile(srv.config, good, 0o600); err != nil {
		t.Fatal(err)
	}
	addUser(t, srv, "carol", "carol's password")
	reloads := strings.Count(srv.proc.Out.String(), "configuration reloaded")
	srv.proc.Cmd.Process.Signal(syscall.SIGHUP)
	waitLogCount(t, srv.proc, "configuration reloaded", reloads+1, 5*time.Second)
	carol := startClientAs(t, ns2, &srv2, "carol", "carol's password", true, nil)
	ping(t, ns2, tunnelServer)
	ping(t, ns1, tunnelServer)
	if us := ctlUsers(t, srv); us["alice"].ID != 1 || us["carol"].User == "" {
		t.Errorf("after reload: %+v", us)
	}

	// SIGTERM: every client is told the server goes away (TERMINATE with
	// the shutdown reason, which vpnc takes as a restart: it keeps its
	// session and tries to reconnect with its cookie), vpnd exits 0 and
	// removes its socket.
	srv.proc.Cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.proc.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("vpnd exited %d after SIGTERM, want 0", code)
	}
	for _, c := range []*vpnClient{alice, carol} {
		c.proc.waitLog(t, "peer sent terminate: server shutting down", 10*time.Second)
	}
	if _, err := os.Stat(srv.ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(srv.ctl)); err != nil {
		t.Error(err)
	}
}

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/privdrop"
)

// The user vpnd runs as in these tests: nobody exists everywhere.
const runAsUser, runAsGID = "nobody", 65534

// tempGroup creates a system group for the test and deletes it when the
// test ends.
func tempGroup(t *testing.T) (string, int) {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	name := "kvpnctl" + hex.EncodeToString(rnd[:])
	mustRun(t, "groupadd", "--system", name)
	t.Cleanup(func() { exec.Command("groupdel", name).Run() })
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return name, gid
}

// ctlAs runs `vpnd ctl` as uid nobody with the given supplementary
// groups, from a copy of vpnd that nobody may execute.
func ctlAs(t *testing.T, vpnd string, s *vpnServer, groups []uint32, args ...string) (string, error) {
	t.Helper()
	u, _ := user.Lookup(runAsUser)
	uid, _ := strconv.Atoi(u.Uid)
	cmd := exec.Command(vpnd, append([]string{"ctl", "--socket", s.ctl}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: runAsGID, Groups: groups}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// publicCopy copies vpnd where any user may run it (the test binaries'
// directory is root's only).
func publicCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o711)
	os.Chmod(dir, 0o755)
	src, err := os.Open(bins.vpnd)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "vpnd")
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return dst
}

// TestUnprivilegedServer: vpnd with run-as-user serves from a process
// whose every thread has non-root uids and gids and CAP_NET_ADMIN alone
// (/proc/PID/task/*/status); the tunnel works, a reload still installs
// a kernel route (an iroute), revoked sessions are still written, and
// the control socket answers root and ctl-group members, not another
// user. A run-as-user that does not exist stops vpnd at start.
func TestUnprivilegedServer(t *testing.T) {
	requireE2E(t)
	ctlGroup, ctlGID := tempGroup(t)
	srvNS, cliNS := newNS(t, "srv"), newNS(t, "cli")
	link(t, srvNS, serverVeth+"/24", cliNS, clientVeth+"/24")

	// A missing user: a clear error, exit 1, and no TUN device left.
	bad := startServerFails(t, srvNS, `run-as-user = "kvpn-no-such-user"`)
	if !strings.Contains(bad, `run-as-user "kvpn-no-such-user"`) || !strings.Contains(bad, "unknown user") {
		t.Fatalf("vpnd with a missing run-as-user:\n%s", bad)
	}
	if out, err := srvNS.try("ip", "link", "show", "kvpns0"); err == nil {
		t.Fatalf("TUN device created although vpnd refused to start:\n%s", out)
	}

	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o711) // run-as-user must reach the state directory
	srv := startServerIn(t, srvNS, serverVeth, dir, "vpnd.toml", fmt.Sprintf(`run-as-user = %q
ctl-group = %q
`, runAsUser, ctlGroup))
	pid := srv.proc.Cmd.Process.Pid
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "vpnd" {
		t.Fatalf("pid %d is %q, not vpnd", pid, comm)
	}
	u, _ := user.Lookup(runAsUser)
	uid, _ := strconv.Atoi(u.Uid)
	if err := privdrop.CheckPID(pid, uid, runAsGID, privdrop.Mask(privdrop.CapNetAdmin)); err != nil {
		t.Fatalf("vpnd's threads: %v", err)
	}
	st, err := privdrop.ReadStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vpnd pid %d: Uid %v Gid %v CapEff %016x CapPrm %016x CapBnd %016x", pid, st.Uid, st.Gid, st.CapEff, st.CapPrm, st.CapBnd)
	if st.CapEff != 1<<12 {
		t.Fatalf("CapEff %#x, want 0x1000 (cap_net_admin only)", st.CapEff)
	}
	for _, line := range []string{"running unprivileged", "a reload will fail: run-as-user cannot read this file"} {
		if !strings.Contains(srv.proc.Out.String(), line) {
			t.Errorf("vpnd did not log %q", line)
		}
	}

	// The tunnel works.
	c := startClient(t, cliNS, srv, testPassword, true)
	ping(t, cliNS, tunnelServer)

	// A reload (readable files now) installs an iroute into the kernel.
	for _, f := range []string{srv.config, srv.passwd} {
		os.Chown(f, 0, runAsGID)
		os.Chmod(f, 0o640)
	}
	f, err := os.OpenFile(srv.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[users.%s]\niroute = [\"192.168.30.0/24\"]\n", testUser)
	f.Close()
	out := mustCtl(t, srv, "reload")
	t.Logf("vpnd ctl reload: %s", out)
	if r := srvNS.run(t, "ip", "-4", "route", "show", "192.168.30.0/24"); !strings.Contains(r, "dev kvpns0") {
		t.Fatalf("no iroute installed by the reload:\n%s\n%s", r, srv.proc.Out.String())
	}

	// Control socket: root and ctl-group members are answered, another
	// user is refused.
	if users := ctlUsers(t, srv); users[testUser].User != testUser {
		t.Fatalf("root: show users: %+v", users)
	}
	vpnd := publicCopy(t)
	if out, err := ctlAs(t, vpnd, srv, nil, "show", "users"); err == nil || !strings.Contains(out, "for root and the ctl-group only") {
		t.Fatalf("vpnd ctl as %s: %v\n%s", runAsUser, err, out)
	}
	if out, err := ctlAs(t, vpnd, srv, []uint32{uint32(ctlGID)}, "show", "users"); err != nil || !strings.Contains(out, testUser) {
		t.Fatalf("vpnd ctl as %s in %s: %v\n%s", runAsUser, ctlGroup, err, out)
	}

	// Disconnecting revokes the session: the revoked-sessions file is
	// written by the unprivileged process, as its owner.
	mustCtl(t, srv, "disconnect", "user", testUser)
	c.proc.exitCode(t, 20*time.Second)
	eventually(t, 5*time.Second, "revoked-sessions written", func() error {
		fi, err := os.Stat(filepath.Join(dir, "revoked-sessions"))
		if err != nil {
			return err
		}
		if s := fi.Sys().(*syscall.Stat_t); s.Uid != uint32(uid) || fi.Size() == 0 {
			return fmt.Errorf("owner %d size %d", s.Uid, fi.Size())
		}
		return nil
	})
	// Stopped cleanly: the TUN device and the iroute are gone.
	srv.proc.stop(10 * time.Second)
	if code := srv.proc.exitCode(t, time.Second); code != 0 {
		t.Fatalf("vpnd exit code %d", code)
	}
	if out, err := srvNS.try("ip", "link", "show", "kvpns0"); err == nil {
		t.Fatalf("TUN device left after exit:\n%s", out)
	}
}

// startServerFails starts vpnd with extra config lines and returns its
// output once it has exited with code 1.
func startServerFails(t *testing.T, ns *netns, extra string) string {
	t.Helper()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	cmd := exec.Command(bins.vpnd, "passwd", "--file", passwd, testUser)
	cmd.Stdin = strings.NewReader(testPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vpnd passwd: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "vpnd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen = \"0.0.0.0:443\"\npasswd-file = %q\ndevice = \"kvpns0\"\nctl-socket = %q\n%s\n",
		passwd, filepath.Join(dir, "vpnd.sock"), extra)), 0o600)
	p := ns.start(t, "vpnd (failing)", "", bins.vpnd, "serve", "--config", cfg, "--state-dir", dir)
	if code := p.exitCode(t, 10*time.Second); code != 1 {
		t.Fatalf("vpnd exit code %d, want 1\n%s", code, p.Out.String())
	}
	return p.Out.String()
}

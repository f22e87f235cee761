package e2e

import (
	"encoding/base32"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/auth/otp"
)

// otpKey is the token key of the OTP tests (RFC 6238's test key).
var otpKey = []byte("12345678901234567890")

// TestOTPSecondFactor: vpnd with an otp-file (a liboath users file as
// ocserv's). Stock openconnect with its TOTP software token logs in
// without a prompt; vpnc given the code it used (a replay) is refused;
// vpnc given a fresh code on the line after the password logs in.
func TestOTPSecondFactor(t *testing.T) {
	requireOpenconnect(t)
	tp := &topology{srvNS: newNS(t, "srv"), cliNS: newNS(t, "cli")}
	link(t, tp.srvNS, serverVeth+"/24", tp.cliNS, clientVeth+"/24")
	dir := t.TempDir()
	oath := filepath.Join(dir, "users.oath")
	line := "HOTP/T30 " + testUser + " - " + hex.EncodeToString(otpKey) + "\n"
	if err := os.WriteFile(oath, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := otp.Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	tok := f.Token(testUser)
	tp.srv = startServerIn(t, tp.srvNS, serverVeth, dir, "vpnd.toml", `otp-file = "`+oath+`"
route = ["10.99.0.0/16"]`)
	url := "https://" + tp.srv.ip + ":443/"

	used, _ := tok.Code(0, time.Now())
	oc := startOpenconnect(t, tp.cliNS, url, tp.srv.pin, false,
		"--token-mode=totp", "--token-secret=base32:"+base32.StdEncoding.EncodeToString(otpKey))
	addr := waitTunnelUp(t, tp.srv, 1)
	waitTunnelConfig(t, tp.cliNS, oc.ifname, addr, "10.99.0.0/16")
	tp.srv.proc.waitLog(t, "password accepted; asking for the one-time password", 5*time.Second)
	ping(t, tp.cliNS, tunnelServer)
	interruptOpenconnect(t, oc)

	// The code openconnect sent (this step's; if the step turned since,
	// it is older than what was used) is refused.
	c := startClient(t, tp.cliNS, tp.srv, testPassword+"\n"+used, false)
	if code := c.proc.exitCode(t, 20*time.Second); code != 3 {
		t.Fatalf("vpnc with a replayed code: exit %d, want 3 (authentication failed)\n%s", code, c.proc.Out.String())
	}
	tp.srv.proc.waitLog(t, "login failed: one-time password already used (replay)", 5*time.Second)

	// A fresh code (the next step's, inside the window) on stdin.
	fresh, _ := tok.Code(0, time.Now().Add(30*time.Second))
	c = startClient(t, tp.cliNS, tp.srv, testPassword+"\n"+fresh, true)
	ping(t, tp.cliNS, tunnelServer)
	c.proc.stop(10 * time.Second)
}

// TestAuthGroup: select-group offers eng and ops; alice is a member of
// both (password file, reloaded with SIGHUP), and each group has its own
// route. openconnect --authgroup ops gets ops's route, vpnc --authgroup
// eng gets eng's, and vpnc --authgroup sales (not a member) is refused.
func TestAuthGroup(t *testing.T) {
	requireOpenconnect(t)
	tp := newTopology(t, `route = ["10.99.0.0/16"]
select-group = ["eng[Engineering]", "ops", "sales"]
default-select-group = "DEFAULT"
[groups.eng]
route = ["10.88.0.0/16"]
[groups.ops]
route = ["10.89.0.0/16"]
`)
	pw, err := os.ReadFile(tp.srv.passwd)
	if err != nil {
		t.Fatal(err)
	}
	pw = []byte(strings.Replace(string(pw), testUser+":*:", testUser+":eng,ops:", 1))
	if err := os.WriteFile(tp.srv.passwd, pw, 0o600); err != nil {
		t.Fatal(err)
	}
	tp.srv.proc.Cmd.Process.Signal(syscall.SIGHUP)
	tp.srv.proc.waitLog(t, "configuration reloaded", 10*time.Second)
	url := "https://" + tp.srv.ip + ":443/"

	oc := startOpenconnect(t, tp.cliNS, url, tp.srv.pin, false, "--authgroup", "ops")
	addr := waitTunnelUp(t, tp.srv, 1)
	waitTunnelConfig(t, tp.cliNS, oc.ifname, addr, "10.89.0.0/16")
	if out := tp.cliNS.run(t, "ip", "-4", "route"); strings.Contains(out, "10.88.0.0/16") || strings.Contains(out, "10.99.0.0/16") {
		t.Fatalf("ops session got another group's or the global route:\n%s", out)
	}
	tp.srv.proc.waitLog(t, `group=ops`, 5*time.Second)
	interruptOpenconnect(t, oc)

	c := startClient(t, tp.cliNS, tp.srv, testPassword, true, "--authgroup", "eng")
	waitTunnelConfig(t, tp.cliNS, "kvpnc0", c.addr, "10.88.0.0/16")
	ping(t, tp.cliNS, tunnelServer)
	c.proc.stop(10 * time.Second)

	c = startClient(t, tp.cliNS, tp.srv, testPassword, false, "--authgroup", "sales")
	if code := c.proc.exitCode(t, 20*time.Second); code != 3 {
		t.Fatalf("vpnc --authgroup sales: exit %d, want 3\n%s", code, c.proc.Out.String())
	}
	tp.srv.proc.waitLog(t, `not a member of group \"sales\"`, 5*time.Second)
}

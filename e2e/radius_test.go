package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RADIUS against the real FreeRADIUS (Debian's freeradius 3.2): each
// RADIUS server runs `freeradius -X` in a namespace of its own, linked to
// vpnd's, with a configuration generated into a temporary directory:
// clients.conf-style client with the shared secret, a users file (a user
// with a Framed-IP-Address and a Class, a plain one, and one that gets an
// Access-Challenge from unlang), and the detail module writing accounting
// records into that directory, which the test reads.

const (
	radiusSecret = "kvpn-e2e-secret"
	radFramed    = "10.77.0.50" // ralice's Framed-IP-Address
	radOTP       = "424242"     // rcarol's one-time code
	radPassword  = "radius pw"
)

// radiusServer is a running FreeRADIUS.
type radiusServer struct {
	ns   *netns
	ip   string
	dir  string
	proc *proc
}

// freeradiusConf is a minimal radiusd.conf: auth and acct on every
// address, PAP against the users file, a challenge for rcarol, detail for
// accounting. %[1]s is the configuration directory.
const freeradiusConf = `prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = %[1]s/log
raddbdir = %[1]s
radacctdir = %[1]s/acct
name = freeradius
confdir = %[1]s
modconfdir = %[1]s
run_dir = %[1]s/run
db_dir = %[1]s
libdir = /usr/lib/freeradius
pidfile = %[1]s/run/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {
	destination = stdout
	colourise = no
	file = %[1]s/log/radius.log
}
security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}
proxy_requests = no
client vpnd {
	ipaddr = 0.0.0.0/0
	secret = %[2]s
	require_message_authenticator = yes
}
thread pool {
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 2
}
modules {
	pap {
	}
	files {
		filename = %[1]s/users
	}
	detail {
		filename = %[1]s/acct/detail
		header = "%%t"
		permissions = 0600
	}
	always ok {
		rcode = ok
	}
	always handled {
		rcode = handled
	}
	always reject {
		rcode = reject
	}
}
server default {
	listen {
		type = auth
		ipaddr = *
		port = 1812
	}
	listen {
		type = acct
		ipaddr = *
		port = 1813
	}
	authorize {
		if (&State) {
			if (&User-Name == "rcarol" && &State == "otp-step" && &User-Password == "%[3]s") {
				update control {
					&Auth-Type := Accept
				}
			}
			else {
				reject
			}
		}
		else {
			files
			pap
		}
	}
	authenticate {
		Auth-Type PAP {
			pap
			if (ok && &User-Name == "rcarol") {
				update reply {
					&State := "otp-step"
					&Reply-Message := "Enter your one-time code"
				}
				update control {
					&Response-Packet-Type := Access-Challenge
				}
				handled
			}
		}
	}
	preacct {
	}
	accounting {
		detail
		ok
	}
	post-auth {
	}
}
`

// radiusUsersFile: ralice has a fixed address and a Class, rbob nothing,
// rcarol gets a challenge (radiusd.conf).
var radiusUsersFile = fmt.Sprintf(`ralice Cleartext-Password := %[1]q
	Framed-IP-Address = %[2]s,
	Class = "OU=engineering;"

rbob Cleartext-Password := %[1]q

rcarol Cleartext-Password := %[1]q
`, radPassword, radFramed)

// startFreeRADIUS runs FreeRADIUS in a namespace of its own, linked to
// vpnd's namespace srvNS on subnet 192.168.N.0/24 (vpnd .1, FreeRADIUS .2).
func startFreeRADIUS(t *testing.T, srvNS *netns, subnet int) *radiusServer {
	t.Helper()
	if _, err := exec.LookPath("freeradius"); err != nil {
		t.Skip("freeradius not installed (scripts/install-deps.sh)")
	}
	r := &radiusServer{ns: newNS(t, "rad"), ip: fmt.Sprintf("192.168.%d.2", subnet), dir: t.TempDir()}
	link(t, srvNS, fmt.Sprintf("192.168.%d.1/24", subnet), r.ns, r.ip+"/24")
	for _, d := range []string{"acct", "run", "log"} {
		os.MkdirAll(filepath.Join(r.dir, d), 0o700)
	}
	conf := fmt.Sprintf(freeradiusConf, r.dir, radiusSecret, radOTP)
	if err := os.WriteFile(filepath.Join(r.dir, "radiusd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "users"), []byte(radiusUsersFile), 0o600); err != nil {
		t.Fatal(err)
	}
	// -f: foreground; -X would also be single-threaded and very verbose.
	r.proc = r.ns.start(t, "freeradius "+r.ip, "", "freeradius", "-f", "-l", "stdout", "-d", r.dir)
	r.proc.waitLog(t, "Ready to process requests", 15*time.Second)
	return r
}

// acctRecord is one record of FreeRADIUS's detail file.
type acctRecord map[string]string

// records reads the detail file ("" attributes for none yet).
func (r *radiusServer) records(t *testing.T) []acctRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "acct", "detail"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []acctRecord
	for _, block := range strings.Split(string(b), "\n\n") {
		rec := acctRecord{}
		for _, line := range strings.Split(block, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), " = ")
			if ok {
				rec[k] = strings.Trim(v, `"`)
			}
		}
		if len(rec) > 0 {
			out = append(out, rec)
		}
	}
	return out
}

// waitRecord waits for a record of user with Acct-Status-Type status (and,
// if sid is not "", that Acct-Session-Id) and returns it.
func (r *radiusServer) waitRecord(t *testing.T, user, status, sid string, timeout time.Duration) acctRecord {
	t.Helper()
	var found acctRecord
	eventually(t, timeout, fmt.Sprintf("accounting %s of %s at %s", status, user, r.ip), func() error {
		for _, rec := range r.records(t) {
			if rec["User-Name"] == user && rec["Acct-Status-Type"] == status && (sid == "" || rec["Acct-Session-Id"] == sid) {
				found = rec
				return nil
			}
		}
		b, _ := os.ReadFile(filepath.Join(r.dir, "acct", "detail"))
		return fmt.Errorf("not yet; detail file:\n%s", b)
	})
	return found
}

// octets is an Acct-*-Octets counter with its Gigawords.
func (rec acctRecord) octets(dir string) uint64 {
	lo, _ := strconv.ParseUint(rec["Acct-"+dir+"-Octets"], 10, 64)
	hi, _ := strconv.ParseUint(rec["Acct-"+dir+"-Gigawords"], 10, 64)
	return hi<<32 | lo
}

func (rec acctRecord) num(k string) uint64 {
	n, _ := strconv.ParseUint(rec[k], 10, 64)
	return n
}

// radiusVpnd starts vpnd with auth = "radius" against servers.
func radiusVpnd(t *testing.T, ns *netns, servers ...*radiusServer) *vpnServer {
	t.Helper()
	sf := filepath.Join(t.TempDir(), "radius-secret")
	if err := os.WriteFile(sf, []byte(radiusSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, r := range servers {
		list = append(list, strconv.Quote(r.ip))
	}
	return startServer(t, ns, serverVeth, fmt.Sprintf(`auth = "radius"
[radius]
server = [%s]
secret-file = %q
nas-identifier = "kvpn-e2e"
timeout = 1
retries = 1
interim-interval = 2
`, strings.Join(list, ", "), sf))
}

// startOpenconnectRadius runs stock openconnect as user, feeding it
// stdin (the password, and a one-time code for a challenge), and waits for
// the tunnel. It does not pass --non-inter: openconnect reads the answer
// to the challenge form from stdin as it would prompt a user.
func startOpenconnectRadius(t *testing.T, ns *netns, s *vpnServer, user, stdin string) *ocClient {
	t.Helper()
	c := &ocClient{ns: ns, ifname: "octun" + randHex(3)}
	args := []string{"openconnect", "-u", user, "--passwd-on-stdin", "--servercert", s.pin,
		"-i", c.ifname, "--reconnect-timeout", "20", "--no-dtls", "https://" + s.ip}
	c.proc = ns.start(t, "openconnect "+user, stdin, args...)
	c.proc.waitLog(t, "Configured as ", 20*time.Second)
	return c
}

// TestRadiusFreeRADIUS: stock openconnect and vpnc log in through a real
// FreeRADIUS; the Framed-IP-Address is the tunnel address; accounting
// Start, Interim-Update and Stop (User-Request, Admin-Reset, NAS-Reboot)
// arrive in FreeRADIUS's detail file with octet counts matching a hashed
// transfer and vpnd's own counters; a challenge user answers a second
// form; a wrong password and unreachable servers give a clear error; a
// second server takes over when the first is down.
func TestRadiusFreeRADIUS(t *testing.T) {
	requireE2E(t)
	srvNS, cliNS := newNS(t, "srv"), newNS(t, "cli")
	link(t, srvNS, serverVeth+"/24", cliNS, clientVeth+"/24")
	rad1 := startFreeRADIUS(t, srvNS, 78)
	rad2 := startFreeRADIUS(t, srvNS, 79)
	srv := radiusVpnd(t, srvNS, rad1, rad2)

	// 1. openconnect, Framed-IP-Address and Class, accounting with octets.
	oc := startOpenconnectRadius(t, cliNS, srv, "ralice", radPassword+"\n")
	if addr := waitTunnelUp(t, srv, 1); addr != radFramed {
		t.Fatalf("vpnd assigned %s, want the Framed-IP-Address %s", addr, radFramed)
	}
	if !strings.Contains(oc.proc.Out.String(), "Configured as "+radFramed) {
		t.Fatalf("openconnect does not report %s:\n%s", radFramed, oc.proc.Out.String())
	}
	start := rad1.waitRecord(t, "ralice", "Start", "", 10*time.Second)
	sid := start["Acct-Session-Id"]
	if start["Framed-IP-Address"] != radFramed || start["NAS-Identifier"] != "kvpn-e2e" ||
		start["Class"] != "0x4f553d656e67696e656572696e673b" || start["Calling-Station-Id"] != clientVeth {
		t.Fatalf("Start record: %v", start)
	}
	waitTunnelConfig(t, cliNS, oc.ifname, radFramed, "10.77.0.0/24")
	size := bulkSize(8 << 20)
	bulkBothWays(t, srvNS, tunnelServer, cliNS, size)
	interim := rad1.waitRecord(t, "ralice", "Interim-Update", sid, 10*time.Second)
	// The Interim after the transfer: wait for one whose input covers it.
	eventually(t, 10*time.Second, "an Interim-Update counting the transfer", func() error {
		for _, rec := range rad1.records(t) {
			if rec["Acct-Session-Id"] == sid && rec["Acct-Status-Type"] == "Interim-Update" && rec.octets("Input") >= uint64(size) {
				interim = rec
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	vpndView := ctlUsers(t, srv)["ralice"]
	interruptOpenconnect(t, oc)
	stop := rad1.waitRecord(t, "ralice", "Stop", sid, 10*time.Second)
	if stop["Acct-Terminate-Cause"] != "User-Request" || stop["Class"] != start["Class"] {
		t.Fatalf("Stop record: %v", stop)
	}
	in, out := stop.octets("Input"), stop.octets("Output")
	t.Logf("RADIUS-ACCT session %s: moved %d bytes each way (SHA-256 checked)", sid, size)
	t.Logf("RADIUS-ACCT Interim-Update: Acct-Input-Octets=%s Acct-Output-Octets=%s Acct-Input-Packets=%s Acct-Output-Packets=%s",
		interim["Acct-Input-Octets"], interim["Acct-Output-Octets"], interim["Acct-Input-Packets"], interim["Acct-Output-Packets"])
	t.Logf("RADIUS-ACCT Stop: Acct-Input-Octets=%s Acct-Output-Octets=%s Acct-Input-Gigawords=%s Acct-Output-Gigawords=%s Acct-Input-Packets=%s Acct-Output-Packets=%s Acct-Session-Time=%s Acct-Terminate-Cause=%s",
		stop["Acct-Input-Octets"], stop["Acct-Output-Octets"], stop["Acct-Input-Gigawords"], stop["Acct-Output-Gigawords"],
		stop["Acct-Input-Packets"], stop["Acct-Output-Packets"], stop["Acct-Session-Time"], stop["Acct-Terminate-Cause"])
	t.Logf("RADIUS-ACCT vpnd ctl before the disconnect: bytes_in=%d bytes_out=%d packets_in=%d packets_out=%d",
		vpndView.BytesIn, vpndView.BytesOut, vpndView.PacketsIn, vpndView.PacketsOut)
	// Octets count IP packets in the tunnel: the payload plus IP and TCP
	// headers (about 3%% at this MTU), ACKs and the pings. Margin: the
	// payload to payload + 10%% + 256 KiB; and within 64 KiB of vpnd's
	// own counters read just before the disconnect.
	for _, c := range []struct {
		name      string
		got, vpnd uint64
	}{{"Input", in, vpndView.BytesIn}, {"Output", out, vpndView.BytesOut}} {
		if c.got < uint64(size) || c.got > uint64(size)+uint64(size)/10+256<<10 {
			t.Errorf("Acct-%s-Octets %d for a transfer of %d", c.name, c.got, size)
		}
		if c.got < c.vpnd || c.got-c.vpnd > 64<<10 {
			t.Errorf("Acct-%s-Octets %d, vpnd counted %d", c.name, c.got, c.vpnd)
		}
	}
	if stop.num("Acct-Input-Packets") == 0 || stop.num("Acct-Output-Packets") == 0 {
		t.Errorf("no packet counts: %v", stop)
	}

	// 2. A challenge: openconnect shows the second form and sends the code.
	oc = startOpenconnectRadius(t, cliNS, srv, "rcarol", radPassword+"\n"+radOTP+"\n")
	if !strings.Contains(oc.proc.Out.String(), "Enter your one-time code") {
		t.Fatalf("openconnect did not show the challenge:\n%s", oc.proc.Out.String())
	}
	rad1.waitRecord(t, "rcarol", "Start", "", 10*time.Second)
	interruptOpenconnect(t, oc)
	// vpnc answers it too: the code is the line after the password.
	vc := startClientAs(t, cliNS, srv, "rcarol", radPassword+"\n"+radOTP, true, nil)
	eventually(t, 10*time.Second, "accounting Start of vpnc's challenge login", func() error {
		n := 0
		for _, rec := range rad1.records(t) {
			if rec["User-Name"] == "rcarol" && rec["Acct-Status-Type"] == "Start" {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d Start records of rcarol, want openconnect's and vpnc's", n)
		}
		return nil
	})
	vc.proc.stop(5 * time.Second)

	// 3. vpnc gets a pool address; the operator disconnects it: Admin-Reset.
	vc = startClientAs(t, cliNS, srv, "rbob", radPassword, true, nil)
	if vc.addr == radFramed || !strings.HasPrefix(vc.addr, "10.77.0.") {
		t.Fatalf("vpnc got %s", vc.addr)
	}
	rad1.waitRecord(t, "rbob", "Start", "", 10*time.Second)
	mustCtl(t, srv, "disconnect", "user", "rbob")
	if rec := rad1.waitRecord(t, "rbob", "Stop", "", 10*time.Second); rec["Acct-Terminate-Cause"] != "Admin-Reset" {
		t.Fatalf("Stop after ctl disconnect: %v", rec)
	}
	vc.proc.stop(5 * time.Second)

	// 4. A wrong password is refused with a clear error.
	vc = startClientAs(t, cliNS, srv, "rbob", "wrong", false, nil)
	if code := vc.proc.exitCode(t, 20*time.Second); code != 3 {
		t.Fatalf("vpnc exit %d with a wrong password, want 3 (authentication)\n%s", code, vc.proc.Out.String())
	}
	if !strings.Contains(vc.proc.Out.String(), "Login failed.") {
		t.Fatalf("vpnc output:\n%s", vc.proc.Out.String())
	}
	srv.proc.waitLog(t, "login failed: RADIUS Access-Reject", 5*time.Second)

	// 5. The first server goes down: the second takes over, accounting too;
	// then vpnd shuts down with the session up: Stop with NAS-Reboot.
	rad1.proc.stop(5 * time.Second)
	vc = startClientAs(t, cliNS, srv, "rbob", radPassword, true, nil)
	srv.proc.waitLog(t, "RADIUS server not answering; trying the next one", 5*time.Second)
	rad2.waitRecord(t, "rbob", "Start", "", 15*time.Second)
	srv.proc.stop(15 * time.Second)
	if rec := rad2.waitRecord(t, "rbob", "Stop", "", 10*time.Second); rec["Acct-Terminate-Cause"] != "NAS-Reboot" {
		t.Fatalf("Stop at shutdown: %v", rec)
	}
	vc.proc.stop(5 * time.Second)

	// 6. No server answers: a clear error, and vpnd goes on.
	rad2.proc.stop(5 * time.Second)
	srv.proc = srvNS.start(t, "vpnd (restarted)", "", srv.args...)
	srv.proc.waitLog(t, "vpnd listening", 15*time.Second)
	vc = startClientAs(t, cliNS, srv, "rbob", radPassword, false, nil)
	if code := vc.proc.exitCode(t, 30*time.Second); code != 3 {
		t.Fatalf("vpnc exit %d with RADIUS unreachable, want 3\n%s", code, vc.proc.Out.String())
	}
	if !strings.Contains(vc.proc.Out.String(), "authentication server is unreachable") {
		t.Fatalf("vpnc output:\n%s", vc.proc.Out.String())
	}
	srv.proc.waitLog(t, "login failed: no RADIUS server answered", 5*time.Second)
}

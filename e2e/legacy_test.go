package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"kvpn/ctl"
)

// TestOpenconnectLegacyDTLS: the stock openconnect, with explicit DTLS
// ciphers (so without PSK-NEGOTIATE), gets the legacy AnyConnect DTLS from
// vpnd: DTLS 1.2 AES-GCM, or Cisco's DTLS 0.9 AES-CBC-SHA1. Pings and a
// hashed transfer both ways go over UDP (nft counter); with UDP blocked
// the tunnel works over TLS.
func TestOpenconnectLegacyDTLS(t *testing.T) {
	for _, tc := range []struct {
		name, ciphers, suite, ocLog string
		blocked                     bool
	}{
		{"dtls12-aes128-gcm", "OC-DTLS1_2-AES128-GCM", "OC-DTLS1_2-AES128-GCM", "(DTLS1.2)-(RSA)-(AES-128-GCM)", false},
		{"dtls12-aes256-gcm", "OC-DTLS1_2-AES256-GCM", "OC-DTLS1_2-AES256-GCM", "(DTLS1.2)-(RSA)-(AES-256-GCM)", false},
		{"dtls09-aes128-cbc", "AES128-SHA", "AES128-SHA", "(DTLS0.9)-(RSA)-(AES-128-CBC)-(SHA1)", false},
		{"dtls09-aes256-cbc", "AES256-SHA", "AES256-SHA", "(DTLS0.9)-(RSA)-(AES-256-CBC)-(SHA1)", false},
		{"udp-blocked", "OC-DTLS1_2-AES128-GCM", "OC-DTLS1_2-AES128-GCM", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireOpenconnect(t)
			tp := newTopology(t, `route = ["10.99.0.0/16"]`)
			if tc.blocked {
				blockUDP(t, tp.srvNS)
			}
			oc := startOpenconnect(t, tp.cliNS, "https://"+tp.srv.ip+":443/", tp.srv.pin, true,
				"--dtls-ciphers="+tc.ciphers)
			addr := waitTunnelUp(t, tp.srv, 1)
			waitTunnelConfig(t, tp.cliNS, oc.ifname, addr, "10.99.0.0/16")
			tp.srv.proc.waitLog(t, `suite=`+tc.suite+` version=`, 5*time.Second)
			if !tc.blocked {
				oc.proc.waitLog(t, tc.ocLog, 10*time.Second)
				tp.srv.proc.waitLog(t, `msg="DTLS up"`, 5*time.Second)
			}
			countUDP(t, tp.srvNS)
			ping(t, tp.cliNS, tunnelServer)
			ping(t, tp.srvNS, addr)
			const size = 8 << 20
			before := udpBytes(t, tp.srvNS)
			d := bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, size)
			checkUDPCarried(t, tp.srvNS, before, size, !tc.blocked)
			t.Logf("openconnect (legacy %s) -> vpnd: 8 MiB each way in %s", tc.ciphers, d.Round(time.Millisecond))
			if tc.blocked {
				if strings.Contains(tp.srv.proc.Out.String(), `msg="DTLS up"`) {
					t.Fatalf("DTLS came up with UDP blocked:\n%s", tp.srv.proc.Out.String())
				}
			}
			if out := tp.srv.proc.Out.String(); strings.Contains(out, "handshake failed") {
				t.Fatalf("vpnd logged a failed handshake:\n%s", out)
			}
			interruptOpenconnect(t, oc)
			tp.srv.proc.waitLog(t, `msg="session ended"`, 5*time.Second)
		})
	}
}

// TestLegacyDTLSBadOffer: CONNECTs that ask for the legacy DTLS with a
// short or non-hex X-DTLS-Master-Secret, or with only suite names vpnd
// does not know, get no DTLS offer: the tunnel comes up over TLS and
// carries a ping (an ICMP echo to the server's tunnel address as CSTP
// DATA, and its reply), vpnd logs why and counts each in `show stats`
// (dtls-legacy-bad-secret, dtls-legacy-no-suite). Nothing panics.
func TestLegacyDTLSBadOffer(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	addr := net.JoinHostPort(serverVeth, "443")
	drops := func() map[string]uint64 {
		t.Helper()
		var rep ctl.Reply
		if err := json.Unmarshal([]byte(mustCtl(t, tp.srv, "--json", "show", "stats")), &rep); err != nil || rep.Stats == nil {
			t.Fatalf("show stats: %v", err)
		}
		return rep.Stats.Drops
	}
	want := map[string]uint64{"dtls-legacy-bad-secret": 0, "dtls-legacy-no-suite": 0}
	for k, v := range drops() {
		if _, ok := want[k]; ok && v != 0 {
			t.Fatalf("%s = %d before any bad input", k, v)
		}
	}
	for _, tc := range []struct{ mode, counter, log string }{
		{"legacy-short-secret", "dtls-legacy-bad-secret", "have 8 characters"},
		{"legacy-nonhex-secret", "dtls-legacy-bad-secret", "have 96 characters"},
		{"legacy-unknown-suites", "dtls-legacy-no-suite", `no suite vpnd can resume among X-DTLS-CipherSuite \"NO-SUCH-SUITE:RC4-MD5\"`},
	} {
		out, err := tp.cliNS.try("env", helperEnv+"=bad", bins.self, addr, tc.mode, testUser, testPassword)
		if err != nil || !strings.Contains(out, "no-dtls") || !strings.Contains(out, "ping ok") {
			t.Fatalf("%s: want no DTLS offer and a ping over CSTP, got (%v):\n%s", tc.mode, err, out)
		}
		t.Logf("%s: %s", tc.mode, strings.ReplaceAll(strings.TrimSpace(out), "\n", ", "))
		tp.srv.proc.waitLog(t, "legacy DTLS not offered; the tunnel stays on TLS", 5*time.Second)
		tp.srv.proc.waitLog(t, tc.log, 5*time.Second)
		want[tc.counter]++
		got := drops()
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("after %s: %s = %d, want %d (drops %v)", tc.mode, k, got[k], v, got)
			}
		}
	}
	if out := tp.srv.proc.Out.String(); strings.Contains(out, "panic") || strings.Contains(out, "legacy DTLS offered") {
		t.Fatalf("vpnd panicked or made a legacy offer:\n%s", out)
	}
}

// TestOpenconnectLegacyDTLSToOcserv is the reference for
// TestOpenconnectLegacyDTLS: the same openconnect with the same explicit
// DTLS ciphers against stock ocserv (cisco-client-compat, as Debian ships
// it) gets the same legacy DTLS, and pings and a hashed transfer both
// ways go over UDP (nft counter).
func TestOpenconnectLegacyDTLSToOcserv(t *testing.T) {
	for _, tc := range []struct{ name, ciphers, ocLog string }{
		{"dtls12-aes128-gcm", "OC-DTLS1_2-AES128-GCM", "(DTLS1.2)-(RSA)-(AES-128-GCM)"},
		{"dtls12-aes256-gcm", "OC-DTLS1_2-AES256-GCM", "(DTLS1.2)-(RSA)-(AES-256-GCM)"},
		{"dtls09-aes128-cbc", "AES128-SHA", "(DTLS0.9)-(RSA)-(AES-128-CBC)-(SHA1)"},
		{"dtls09-aes256-cbc", "AES256-SHA", "(DTLS0.9)-(RSA)-(AES-256-CBC)-(SHA1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireOcserv(t)
			requireOpenconnect(t)
			const srvIP, cliIP = "192.168.88.1", "192.168.88.2"
			srvNS, cliNS := newNS(t, "osrv"), newNS(t, "cli")
			link(t, srvNS, srvIP+"/24", cliNS, cliIP+"/24")
			ocs := startOcserv(t, srvNS, srvIP, ocservOpts{dtls: true})
			oc := startOpenconnect(t, cliNS, "https://"+srvIP+":443/", ocs.pin, true, "--dtls-ciphers="+tc.ciphers)
			m := regexp.MustCompile(`Configured as ([0-9.]+)`).FindStringSubmatch(oc.proc.Out.String())
			if m == nil {
				t.Fatalf("openconnect did not say its address:\n%s", oc.proc.Out.String())
			}
			waitTunnelConfig(t, cliNS, oc.ifname, m[1], ocservRoute)
			oc.proc.waitLog(t, tc.ocLog, 10*time.Second)
			if out := oc.proc.Out.String(); strings.Contains(out, "PSK") {
				t.Fatalf("openconnect negotiated PSK DTLS, not the legacy mode:\n%s", out)
			}
			// ocserv's worker configures its end of the tun after the CONNECT.
			eventually(t, 10*time.Second, "ocserv's tun address", func() error {
				if out, _ := srvNS.try("ip", "-4", "addr"); !strings.Contains(out, "inet "+ocservTunnelIP) {
					return fmt.Errorf("%s not configured yet", ocservTunnelIP)
				}
				return nil
			})
			countUDP(t, srvNS)
			ping(t, cliNS, ocservTunnelIP)
			ping(t, srvNS, m[1])
			const size = 8 << 20
			before := udpBytes(t, srvNS)
			d := bulkBothWays(t, srvNS, ocservTunnelIP, cliNS, size)
			checkUDPCarried(t, srvNS, before, size, true)
			t.Logf("openconnect (legacy %s) -> ocserv: 8 MiB each way in %s", tc.ciphers, d.Round(time.Millisecond))
			interruptOpenconnect(t, oc)
		})
	}
}

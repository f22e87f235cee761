package e2e

import (
	"strings"
	"testing"
	"time"
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
				if strings.Contains(tp.srv.proc.out.String(), `msg="DTLS up"`) {
					t.Fatalf("DTLS came up with UDP blocked:\n%s", tp.srv.proc.out.String())
				}
			}
			if out := tp.srv.proc.out.String(); strings.Contains(out, "handshake failed") {
				t.Fatalf("vpnd logged a failed handshake:\n%s", out)
			}
			interruptOpenconnect(t, oc)
			tp.srv.proc.waitLog(t, `msg="session ended"`, 5*time.Second)
		})
	}
}

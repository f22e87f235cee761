package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestDTLSRoaming puts a NAT router between client and server and changes
// the address it maps the client's UDP traffic to (a NAT rebinding): the
// server must keep the client's DTLS session once a record from the new
// address authenticates, without a new handshake.
//
//	client 192.168.79.2 -- .79.1 router .78.1/.78.3/.78.4 -- 192.168.78.2 server
//
// With connection IDs (the kvpn dtls-cid extension, the default between
// vpnd and vpnc) the server finds the peer by the CID in the record; without
// (KVPN_DTLS_CID=0, as with stock clients) by trial authentication.
func TestDTLSRoaming(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{{"cid", nil}, {"no-cid", []string{"KVPN_DTLS_CID=0"}}} {
		t.Run(tc.name, func(t *testing.T) { testDTLSRoaming(t, tc.env) })
	}
}

func testDTLSRoaming(t *testing.T, env []string) {
	requireE2E(t)
	cli, rtr, srv := newNS(t, "cli"), newNS(t, "rtr"), newNS(t, "srv")
	link(t, cli, "192.168.79.2/24", rtr, "192.168.79.1/24")
	link(t, rtr, "192.168.78.1/24", srv, "192.168.78.2/24")
	cli.run(t, "ip", "route", "add", "default", "via", "192.168.79.1")
	srv.run(t, "ip", "route", "add", "192.168.79.0/24", "via", "192.168.78.1")
	rtr.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	rtr.run(t, "bash", "-c", `dev=$(ip -o -4 addr show | awk '/192.168.78.1\// {print $2}'); `+
		`ip addr add 192.168.78.3/24 dev $dev && ip addr add 192.168.78.4/24 dev $dev`)
	snat := func(to string) {
		rtr.run(t, "nft", "flush ruleset")
		rtr.run(t, "nft", "add table ip kvpn_nat")
		rtr.run(t, "nft", "add chain ip kvpn_nat post { type nat hook postrouting priority 100 ; }")
		rtr.run(t, "nft", "add rule ip kvpn_nat post ip saddr 192.168.79.0/24 udp dport 443 snat to "+to)
		rtr.run(t, "env", helperEnv+"=ctflush", bins.self)
	}
	snat("192.168.78.3")

	s := startServer(t, srv, "192.168.78.2", "")
	countUDP(t, srv)
	c := startClientEnv(t, cli, s, testPassword, true, env)
	if !strings.Contains(c.proc.Out.String(), "transport dtls/") {
		t.Fatalf("DTLS not up:\n%s", c.proc.Out.String())
	}
	s.proc.waitLog(t, "from=192.168.78.3:", 5*time.Second)
	ping(t, cli, tunnelServer)

	snat("192.168.78.4") // the NAT rebinds the flow
	before := udpBytes(t, srv)
	ping(t, cli, tunnelServer)
	s.proc.waitLog(t, "dtls: peer moved to a new address", 5*time.Second)
	if !strings.Contains(s.proc.Out.String(), "to=192.168.78.4:") {
		t.Fatalf("peer did not move to the new address:\n%s", s.proc.Out.String())
	}
	if byCID := strings.Contains(s.proc.Out.String(), "by=connection-id"); byCID != (env == nil) {
		t.Fatalf("roamed by connection ID: %v, want %v:\n%s", byCID, env == nil, s.proc.Out.String())
	}
	size := bulkSize(4 << 20)
	bulkBothWays(t, srv, tunnelServer, cli, size)
	if got := udpBytes(t, srv) - before; got < size {
		t.Fatalf("only %d bytes over UDP after the rebinding: traffic left DTLS", got)
	}
	if n := strings.Count(c.proc.Out.String(), "DTLS up"); n != 1 {
		t.Fatalf("%d DTLS handshakes; roaming must not need a new one:\n%s", n, c.proc.Out.String())
	}
}

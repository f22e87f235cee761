package server

import (
	"net"
	"testing"
	"time"
)

// halfOpen opens n TCP connections from the local address from to the
// server; every stall-th sends the first bytes of a ClientHello record and
// stops there (a stalled handshake), the others send nothing. They close
// when the test ends.
func (ls *loginServer) halfOpen(t *testing.T, n, stall int, from string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	for i := range n {
		c, err := d.Dial("tcp", ls.addr)
		if err != nil {
			t.Fatalf("half-open connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if stall > 0 && i%stall == 0 {
			// A TLS handshake record header announcing 512 bytes, and 4 of them.
			c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc})
		}
	}
}

// TestHalfOpenConnectionsDoNotStopLogin: thousands of connections that
// never finish a TLS handshake, from the login's own address (a NAT) and
// from another, do not stop a correct login: full bounds close the oldest
// connection still in its handshake rather than refuse the newcomer
// (before, the login was closed at once by max-login-connections-per-ip).
// The bounds hold meanwhile, and each closed connection is counted.
func TestHalfOpenConnectionsDoNotStopLogin(t *testing.T) {
	const perIP, total, flood = 64, 96, 1000
	ls := newLoginServer(t, func(c *Config) {
		c.MaxLoginConnectionsPerIP = perIP
		c.MaxLoginConnections = total
		// The bounds alone: with ban-points-connection the evicted
		// connections would ban the flooding address (and the login
		// from it) after max-ban-score of them (TestConnectionPointsBan).
		c.BanPointsConnection = 0
	})
	ls.halfOpen(t, flood, 10, "127.0.0.30")
	ls.halfOpen(t, flood, 10, "127.0.0.31")
	// Every connection of the flood was seen: it holds a place, or it was
	// closed (refused before the fix, evicted after).
	waitFor(t, func() bool {
		d := ls.Snapshot().Drops
		return d["login-conn-evicted"]+d["login-conn-limit"] == 2*flood-total
	})
	if n := ls.loginConnsNow(); n != total {
		t.Errorf("%d connections not logged in, max-login-connections %d", n, total)
	}
	if _, cookie, err := ls.tryLogin("127.0.0.30", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("login from the flooding address: %v", err)
	}
	if _, cookie, err := ls.tryLogin("127.0.0.32", "alice", "secret"); err != nil || cookie == "" {
		t.Fatalf("login from another address: %v", err)
	}
	if n := ls.Snapshot().Drops["login-conn-limit"]; n != 0 {
		t.Errorf("login-conn-limit %d: a newcomer refused while connections were in their handshake", n)
	}
}

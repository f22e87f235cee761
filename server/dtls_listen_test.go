package server

import (
	"net"
	"testing"
	"time"
)

// discardTUN takes the packets the DTLS listener decrypts.
type discardTUN struct{}

func (discardTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// TestListenDTLSGroup: the server opens KVPN_UDP_SOCKETS sockets on the
// one udp-listen address (an SO_REUSEPORT group), reads every one of
// them, and its Snapshot counts what each reader drops.
func TestListenDTLSGroup(t *testing.T) {
	t.Setenv("KVPN_UDP_SOCKETS", "3")
	ts := newTestServer(t, "")
	if err := ts.listenDTLS("127.0.0.1:0", discardTUN{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ts.dtls.Serve() }()
	t.Cleanup(func() {
		for _, c := range ts.udpReaders {
			c.Close()
		}
		ts.udp.Close()
		<-done
	})
	if n := 1 + len(ts.udpReaders); n != 3 {
		t.Fatalf("%d DTLS sockets, want 3", n)
	}
	addr := ts.udp.LocalAddr().(*net.UDPAddr)
	for _, c := range ts.udpReaders {
		if got := c.LocalAddr().(*net.UDPAddr); got.Port != addr.Port || !got.IP.Equal(addr.IP) {
			t.Fatalf("group socket on %v, the first on %v", got, addr)
		}
	}
	// Datagrams matching no session, from many source ports: the kernel
	// spreads them over the group's sockets by a hash of the sender.
	const senders = 32
	for range senders {
		c, err := net.DialUDP("udp4", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{23}) // application data too short to be a record
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.Snapshot().Drops["dtls-no-session"] < senders && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	snap := ts.Snapshot()
	if n := snap.Drops["dtls-no-session"]; n != senders {
		t.Errorf("dtls-no-session = %d, want %d", n, senders)
	}
	for _, k := range []string{"dtls-handshake-limit", "dtls-handshake-busy", "dtls-roam-limit", "dtls-roam-source-limit"} {
		if _, ok := snap.Drops[k]; !ok {
			t.Errorf("Snapshot has no drop reason %q", k)
		}
	}
}

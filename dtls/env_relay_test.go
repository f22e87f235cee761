package dtls

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// relay is a UDP relay between a client and the server, like a NAT: the
// client talks to down, the relay talks to the server from up. It records
// every datagram, can hold back datagrams, inject its own from either
// side, and move up to a new port (NAT rebinding).
type relay struct {
	t      testing.TB
	down   *net.UDPConn
	server netip.AddrPort

	mu       sync.Mutex
	up       *net.UDPConn
	client   netip.AddrPort
	upCap    [][]byte // client -> server
	downCap  [][]byte // server -> client
	dropUp   func([]byte) bool
	dropDown func([]byte) bool

	wg sync.WaitGroup
}

func listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newRelay(t testing.TB, server netip.AddrPort) *relay {
	r := &relay{t: t, down: listenUDP(t, "127.0.0.1:0"), server: server}
	r.up = listenUDP(t, "127.0.0.1:0")
	r.wg.Add(2)
	go r.downLoop()
	go r.upLoop(r.up)
	t.Cleanup(func() {
		r.down.Close()
		r.mu.Lock()
		r.up.Close()
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// Addr is where the client should send.
func (r *relay) Addr() netip.AddrPort { return r.down.LocalAddr().(*net.UDPAddr).AddrPort() }

// UpAddr is the client's address as the server sees it.
func (r *relay) UpAddr() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (r *relay) downLoop() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.down.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dg := bytes.Clone(buf[:n])
		r.mu.Lock()
		r.client = from
		r.upCap = append(r.upCap, dg)
		drop := r.dropUp != nil && r.dropUp(dg)
		up := r.up
		r.mu.Unlock()
		if !drop {
			up.WriteToUDPAddrPort(dg, r.server)
		}
	}
}

func (r *relay) upLoop(up *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := up.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dg := bytes.Clone(buf[:n])
		r.mu.Lock()
		r.downCap = append(r.downCap, dg)
		drop := r.dropDown != nil && r.dropDown(dg)
		client := r.client
		r.mu.Unlock()
		if !drop && client.IsValid() {
			r.down.WriteToUDPAddrPort(dg, client)
		}
	}
}

// Rebind moves the relay's server side to a new port and returns it.
func (r *relay) Rebind() netip.AddrPort {
	nu := listenUDP(r.t, "127.0.0.1:0")
	r.mu.Lock()
	old := r.up
	r.up = nu
	r.mu.Unlock()
	old.Close()
	r.wg.Add(1)
	go r.upLoop(nu)
	return nu.LocalAddr().(*net.UDPAddr).AddrPort()
}

// InjectUp sends dg to the server from the client's (relayed) address.
func (r *relay) InjectUp(dg []byte) {
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	if _, err := up.WriteToUDPAddrPort(dg, r.server); err != nil {
		r.t.Errorf("InjectUp: %v", err)
	}
}

// InjectDown sends dg to the client from the server's (relayed) address.
func (r *relay) InjectDown(dg []byte) {
	r.mu.Lock()
	client := r.client
	r.mu.Unlock()
	if _, err := r.down.WriteToUDPAddrPort(dg, client); err != nil {
		r.t.Errorf("InjectDown: %v", err)
	}
}

func (r *relay) setDrop(up, down func([]byte) bool) {
	r.mu.Lock()
	r.dropUp, r.dropDown = up, down
	r.mu.Unlock()
}

// captured returns the datagrams seen so far in one direction whose first
// byte is ct (any if ct is 0).
func (r *relay) captured(toServer bool, ct byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	src := r.downCap
	if toServer {
		src = r.upCap
	}
	var out [][]byte
	for _, dg := range src {
		if ct == 0 || (len(dg) > 0 && dg[0] == ct) {
			out = append(out, dg)
		}
	}
	return out
}

// isData reports whether dg is an application_data record (a data or
// control record after the handshake).
func isData(dg []byte) bool { return len(dg) > 0 && dg[0] == 23 }

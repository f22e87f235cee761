package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// helperEnv makes the test binary act as a traffic helper instead of
// running tests: tests start it inside a namespace with `ip netns exec`.
const helperEnv = "KVPN_E2E_HELPER"

// runHelper implements the helper modes:
//
//	serve ADDR SIZE   accept one TCP connection on ADDR
//	dial  ADDR SIZE   connect to ADDR
//
// In both modes it sends SIZE pseudo-random bytes and reads until EOF at
// the same time, then prints "sent N HASH" and "recv N HASH".
func runHelper(mode string, args []string) int {
	switch mode {
	case "bad":
		return runBadClient(args)
	case "httpget":
		return runHTTPGet(args)
	case "flood", "connflood":
		return runFlood(mode, args) // issue #15 (hardening_test.go)
	case "ctflush":
		// Forget every connection-tracking entry of this namespace, so the
		// next datagram of a flow gets a fresh NAT mapping.
		if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
			fmt.Fprintln(os.Stderr, "ctflush:", err)
			return 1
		}
		return 0
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "helper: want ADDR SIZE")
		return 2
	}
	size, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	var c net.Conn
	switch mode {
	case "serve":
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Println("listening")
		c, err = ln.Accept()
		ln.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
	case "dial":
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err = net.DialTimeout("tcp", args[0], 2*time.Second)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
	default:
		fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
		return 2
	}
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	type result struct {
		n   int64
		sum string
		err error
	}
	sent := make(chan result, 1)
	go func() {
		h := sha256.New()
		src := io.LimitReader(rand.NewChaCha8([32]byte{byte(size), 7}), size)
		n, err := io.Copy(io.MultiWriter(c, h), src)
		c.(*net.TCPConn).CloseWrite()
		sent <- result{n, hex.EncodeToString(h.Sum(nil)), err}
	}()
	h := sha256.New()
	n, rerr := io.Copy(h, c)
	s := <-sent
	c.Close()
	fmt.Printf("sent %d %s\nrecv %d %s\n", s.n, s.sum, n, hex.EncodeToString(h.Sum(nil)))
	if s.err != nil || rerr != nil {
		fmt.Fprintln(os.Stderr, "helper: send:", s.err, "recv:", rerr)
		return 1
	}
	return 0
}

// transfer is what one helper reported.
type transfer struct {
	sentN, recvN     int64
	sentSum, recvSum string
}

func parseTransfer(t *testing.T, out string) transfer {
	t.Helper()
	var tr transfer
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "sent":
			tr.sentN, tr.sentSum = n, f[2]
		case "recv":
			tr.recvN, tr.recvSum = n, f[2]
		}
	}
	if tr.sentSum == "" || tr.recvSum == "" {
		t.Fatalf("helper printed no result:\n%s", out)
	}
	return tr
}

// bulkBothWays moves size bytes each way between a listener in srvNS at
// listenIP and a dialer in cliNS, and checks counts and SHA-256 sums.
func bulkBothWays(t *testing.T, srvNS *netns, listenIP string, cliNS *netns, size int64) time.Duration {
	t.Helper()
	addr := net.JoinHostPort(listenIP, "5201")
	sz := strconv.FormatInt(size, 10)
	srv := srvNS.start(t, "sink", "", "env", helperEnv+"=serve", bins.self, addr, sz)
	srv.waitLog(t, "listening", 10*time.Second)
	start := time.Now()
	out, err := cliNS.try("env", helperEnv+"=dial", bins.self, addr, sz)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("dialing helper: %v\n%s", err, out)
	}
	if code := srv.exitCode(t, 60*time.Second); code != 0 { // scaled by exitCode
		t.Fatalf("serving helper exited %d:\n%s", code, srv.Out.String())
	}
	c, s := parseTransfer(t, out), parseTransfer(t, srv.Out.String())
	if c.sentN != size || s.recvN != size || c.sentSum != s.recvSum {
		t.Fatalf("client->server: sent %d %s, received %d %s", c.sentN, c.sentSum, s.recvN, s.recvSum)
	}
	if s.sentN != size || c.recvN != size || s.sentSum != c.recvSum {
		t.Fatalf("server->client: sent %d %s, received %d %s", s.sentN, s.sentSum, c.recvN, c.recvSum)
	}
	return elapsed
}

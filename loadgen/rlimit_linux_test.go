package loadgen

import (
	"context"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFileLimitIsCounted: sessions that find RLIMIT_NOFILE reached are
// counted as emfile, not as an unreachable server.
func TestFileLimitIsCounted(t *testing.T) {
	// A listener that never accepts: the kernel completes the handshakes
	// in its backlog, so each session holds its one socket (and no
	// server-side descriptor in this process) while its TLS handshake
	// waits.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(len(fds) + 10)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	u, _ := url.Parse("https://" + ln.Addr().String())
	cfg := &Config{Server: u, ServerCert: "pin-sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", User: "u", Password: "p",
		Sessions: 40, Parallel: 40}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sum, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failures[FailFileLimit] < 20 || sum.Failures[FailTLSDial] != 0 {
		t.Fatalf("failures %v, want at least 20 %s and no %s", sum.Failures, FailFileLimit, FailTLSDial)
	}
}

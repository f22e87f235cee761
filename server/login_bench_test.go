package server

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/GehirnInc/crypt"
	_ "github.com/GehirnInc/crypt/sha512_crypt"

	"kvpn/auth"
)

// stormUsers is how many users log in at once in BenchmarkLoginStorm: the
// 200 openconnect clients behind one NAT address of issue #11.
const stormUsers = 200

// BenchmarkLoginStorm: stormUsers users log in at once from one source
// address (TLS handshake, auth-reply, cookie), against an in-process
// server with its real password check, for the two hash formats a
// password file holds: vpnd's argon2id and ocpasswd's sha512-crypt.
// Reports logins/s and the seconds until the last of them is in.
func BenchmarkLoginStorm(b *testing.B) {
	argon, err := auth.HashPassword("secret")
	if err != nil {
		b.Fatal(err)
	}
	// ocpasswd's format: crypt(3) SHA-512 with the default 5000 rounds.
	sha, err := crypt.SHA512.New().Generate([]byte("secret"), []byte("$6$0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	for _, hc := range []struct{ name, hash string }{{"argon2id", argon}, {"sha512crypt", sha}} {
		b.Run(hc.name, func(b *testing.B) {
			ls := newStormServer(b, hc.hash)
			var total time.Duration
			for b.Loop() {
				total += ls.storm(b, "127.0.0.1")
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapSys)/(1<<20), "MiB-heap-sys")
			per := total.Seconds() / float64(b.N)
			b.ReportMetric(per, "s/200-logins")
			b.ReportMetric(stormUsers/per, "logins/s")
		})
	}
}

// newStormServer is a login server with room for stormUsers sessions
// whose password file holds stormUsers users (user0...) with password
// "secret" hashed as hash (no file when hash is "": the test replaces the
// check).
func newStormServer(tb testing.TB, hash string) *loginServer {
	tb.Helper()
	ls := newLoginServer(tb, func(c *Config) {
		c.IPv4Network = "10.77.0.0/16"
		c.MaxClients = 0
	})
	if hash == "" {
		return ls
	}
	var lines strings.Builder
	for i := range stormUsers {
		fmt.Fprintf(&lines, "user%d:*:%s\n", i, hash)
	}
	if err := os.WriteFile(ls.cfg.PasswdFile, []byte(lines.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := ls.ReloadPasswd(); err != nil {
		tb.Fatal(err)
	}
	return ls
}

// storm logs stormUsers users in at once from the address from, fails tb
// unless every one gets a cookie, ends their sessions and returns how long
// the last took.
func (ls *loginServer) storm(tb testing.TB, from string) time.Duration {
	tb.Helper()
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for i := range stormUsers {
		wg.Go(func() {
			body, cookie, err := ls.tryLogin(from, fmt.Sprintf("user%d", i), "secret")
			if err != nil || cookie == "" {
				if failed.Add(1) == 1 {
					tb.Errorf("user%d: %v %.200s", i, err, body)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if n := failed.Load(); n > 0 {
		tb.Fatalf("%d of %d logins failed", n, stormUsers)
	}
	for _, sess := range ls.list() {
		sess.end("storm over")
	}
	return took
}

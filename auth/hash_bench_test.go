package auth

import (
	"testing"

	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
)

// BenchmarkVerify: one password check per hash format a password file
// holds: vpnd's argon2id (19 MiB, t=2) and ocpasswd's crypt(3) formats
// with their default 5000 rounds. A login's CPU cost on the verification
// pool is this.
func BenchmarkVerify(b *testing.B) {
	argon, err := HashPassword("secret")
	if err != nil {
		b.Fatal(err)
	}
	sha512, err := sha512_crypt.New().Generate([]byte("secret"), []byte("$6$0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	sha256, err := sha256_crypt.New().Generate([]byte("secret"), []byte("$5$0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	for _, hc := range []struct{ name, hash string }{{"argon2id", argon}, {"sha512crypt", sha512}, {"sha256crypt", sha256}} {
		b.Run(hc.name, func(b *testing.B) {
			v, err := parseHash(hc.hash)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if !v.verify("secret") {
					b.Fatal("the right password did not verify")
				}
			}
		})
	}
}

// BenchmarkVerifyUnknownUser: a login's verification for a known user
// (wrong password) and an unknown one, in a file of ocpasswd SHA-512-crypt
// hashes and in one of argon2id hashes. Within each file the two should
// take the same time (TestUnknownUserSameWork checks the work is the
// same; this shows the time).
func BenchmarkVerifyUnknownUser(b *testing.B) {
	argon, err := HashPassword("secret")
	if err != nil {
		b.Fatal(err)
	}
	sha512, err := sha512_crypt.New().Generate([]byte("secret"), []byte("$6$0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []struct{ name, hash string }{{"sha512crypt", sha512}, {"argon2id", argon}} {
		p := &PasswdFile{users: map[string]passwdLine{}}
		v, err := parseHash(f.hash)
		if err != nil {
			b.Fatal(err)
		}
		p.users["alice"] = passwdLine{user: "alice", hash: v}
		p.dummy = pickDummy(p.users, []string{"alice"})
		for _, u := range []string{"alice", "unknown"} {
			b.Run(f.name+"/"+u, func(b *testing.B) {
				for b.Loop() {
					p.Verify(u, "wrong")
				}
			})
		}
	}
}

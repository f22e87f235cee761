package auth

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Unknown users cost the same as known ones: Verify checks the password
// against a dummy hash of the kind and cost most of the file's users have
// (argon2id with their memory, passes and lanes, or SHA-crypt with their
// rounds and salt length), so that a file of imported ocpasswd hashes
// ($6$, ~3 ms) does not answer unknown names with an argon2id computation
// (~70 ms), nor the other way round. Locked users verify their own
// (inner) hash.

// testHookHash, when set, is called with the cost class of each hash
// computation (tests count them).
var testHookHash func(class string)

// hashed reports one hash computation of class to testHookHash.
func hashed(v verifier) {
	if testHookHash != nil {
		testHookHash(costClass(v))
	}
}

// costClass names what a verification of v costs: two hashes of one
// class take the same work for the same password.
func costClass(v verifier) string {
	switch h := v.(type) {
	case argon2Hash:
		return fmt.Sprintf("argon2id m=%d t=%d p=%d salt=%d key=%d", h.memory, h.time, h.threads, len(h.salt), len(h.key))
	case cryptHash:
		rounds, salt := cryptParams(h.setting)
		return fmt.Sprintf("%s rounds=%d salt=%d", h.setting[:3], rounds, len(salt))
	case lockedHash:
		return costClass(h.inner)
	}
	return fmt.Sprintf("%T", v)
}

// cryptParams splits a SHA-crypt setting ("$6$[rounds=N$]salt") into its
// rounds (5000, crypt(3)'s default, when absent; glibc clamps to
// 1000..999999999) and salt.
func cryptParams(setting string) (int, string) {
	rest := setting[3:]
	rounds := 5000
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		n, salt, _ := strings.Cut(r, "$")
		if v, err := strconv.Atoi(n); err == nil {
			rounds = min(max(v, 1000), 999999999)
		}
		rest = salt
	}
	return rounds, rest
}

// dummyFor returns a hash of v's class that no password matches in
// practice (a zero key or a digest of dots) and Verify ignores anyway.
func dummyFor(v verifier) verifier {
	switch h := v.(type) {
	case argon2Hash:
		return argon2Hash{memory: h.memory, time: h.time, threads: h.threads,
			salt: make([]byte, len(h.salt)), key: make([]byte, len(h.key))}
	case cryptHash:
		rounds, salt := cryptParams(h.setting)
		setting := fmt.Sprintf("%srounds=%d$%s", h.setting[:3], rounds, strings.Repeat("s", len(salt)))
		return cryptHash{crypter: h.crypter, setting: setting, sum: strings.Repeat(".", len(h.sum))}
	case lockedHash:
		return dummyFor(h.inner)
	}
	return dummyHash
}

// pickDummy chooses the dummy for a file: of the class most of its users
// have (the first one met among equals), the default argon2id one for an
// empty file.
func pickDummy(users map[string]passwdLine, order []string) verifier {
	count := map[string]int{}
	best, bestN := verifier(dummyHash), 0
	for _, u := range order {
		v := users[u].hash
		c := costClass(v)
		count[c]++
		if count[c] > bestN {
			best, bestN = v, count[c]
		}
	}
	return dummyFor(best)
}

// keepGroupRead gives the new version f of the file at path the old
// one's group and its group read permission, if it had them: a vpnd
// running as run-as-user re-reads the password file on reload through
// its group (chgrp kvpn passwd; chmod 640 passwd), and `vpnd passwd`
// must not take that away. Best effort: the file stays 0600 otherwise.
func keepGroupRead(f *os.File, path string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o040 == 0 {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || f.Chown(-1, int(st.Gid)) != nil {
		return
	}
	f.Chmod(0o640)
}

package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
)

// countHashes records the cost class of every hash computation while f
// runs.
func countHashes(t *testing.T, f func()) []string {
	t.Helper()
	var got []string
	testHookHash = func(c string) { got = append(got, c) }
	defer func() { testHookHash = nil }()
	f()
	return got
}

func writePasswd(t *testing.T, lines ...string) *PasswdFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func cryptOf(t *testing.T, pw, setting string) string {
	t.Helper()
	c := sha512_crypt.New()
	if strings.HasPrefix(setting, "$5$") {
		c = sha256_crypt.New()
	}
	h, err := c.Generate([]byte(pw), []byte(setting))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestUnknownUserSameWork: an unknown user, a known one with a wrong
// password and a locked one each cost exactly one hash computation of the
// class most of the file's users have: with imported SHA-crypt hashes, a
// SHA-crypt computation with their rounds and salt length, not argon2id.
func TestUnknownUserSameWork(t *testing.T) {
	argon, err := HashPassword("pw-argon")
	if err != nil {
		t.Fatal(err)
	}
	sha := cryptOf(t, "pw-alice", "$6$0123456789abcdef")
	p := writePasswd(t,
		"alice:*:"+sha,
		"bob:*:"+cryptOf(t, "pw-bob", "$6$fedcba9876543210"),
		"carol:*:!"+cryptOf(t, "pw-carol", "$6$aaaabbbbccccdddd"), // locked
		"dave:*:"+argon,
	)
	const class = "$6$ rounds=5000 salt=16"
	for _, c := range []struct{ user, pw string }{
		{"alice", "pw-alice"}, {"alice", "wrong"}, {"carol", "pw-carol"}, {"mallory", "pw-alice"}, {"mallory", "x"},
	} {
		got := countHashes(t, func() { p.Verify(c.user, c.pw) })
		if len(got) != 1 || got[0] != class {
			t.Errorf("Verify(%s): hash computations %q, want one of %q", c.user, got, class)
		}
	}
	// The dummy computes a real SHA-crypt (an error would cost nothing).
	d := p.dummy.(cryptHash)
	if out, err := d.crypter.Generate([]byte("x"), []byte(d.setting)); err != nil || !strings.HasPrefix(out, "$6$rounds=5000$ssssssssssssssss$") {
		t.Fatalf("dummy setting %q: %q, %v", d.setting, out, err)
	}
	if p.Verify("mallory", "x") {
		t.Fatal("unknown user verified")
	}

	// A file of argon2id hashes (what vpnd passwd writes): the dummy is
	// argon2id with the same parameters.
	p = writePasswd(t, "dave:*:"+argon, "erin:*:"+argon)
	got := countHashes(t, func() { p.Verify("nobody", "x") })
	want := countHashes(t, func() { p.Verify("dave", "x") })
	if len(got) != 1 || len(want) != 1 || got[0] != want[0] || !strings.HasPrefix(got[0], "argon2id m=19456 t=2 p=1") {
		t.Fatalf("argon2id file: unknown user %q, known %q", got, want)
	}

	// Rounds and salt length follow the file's hashes.
	p = writePasswd(t, "alice:*:"+cryptOf(t, "a", "$5$rounds=20000$abcdefgh"))
	got = countHashes(t, func() { p.Verify("nobody", "x") })
	if len(got) != 1 || got[0] != "$5$ rounds=20000 salt=8" {
		t.Fatalf("$5$ rounds=20000 file: unknown user %q", got)
	}
	// An empty file: the default argon2id dummy.
	p = writePasswd(t, "# no users")
	got = countHashes(t, func() { p.Verify("nobody", "x") })
	if len(got) != 1 || !strings.HasPrefix(got[0], "argon2id m=19456") {
		t.Fatalf("empty file: %q", got)
	}
}

func TestSetPasswordKeepsGroupRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := SetPassword(path, "alice", "a"); err != nil {
		t.Fatal(err)
	}
	mode := func() os.FileMode {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if m := mode(); m != 0o600 {
		t.Fatalf("new file mode %v, want 0600", m)
	}
	os.Chmod(path, 0o640)
	if err := SetPassword(path, "bob", "b"); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o640 {
		t.Fatalf("after an edit of a 0640 file: mode %v, want 0640 kept", m)
	}
	os.Chmod(path, 0o644) // others' read is never kept
	if err := DeleteUser(path, "bob"); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o640 {
		t.Fatalf("after an edit of a 0644 file: mode %v, want 0640", m)
	}
}

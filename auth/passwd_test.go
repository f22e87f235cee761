package auth

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Fixtures made with real tools, so the tests check compatibility rather
// than our own implementation against itself.
const (
	// printf 'secret\nsecret\n' | ocpasswd -c FILE alice
	// printf 'hunter2\nhunter2\n' | ocpasswd -c FILE -g vpn bob
	ocpasswdAlice = `alice:*:$5$n9d5LkAGR0tnNHkE$34sf1hxFf9hFQDOi/NiOPMotIV/yaVW8brrXnFR.ve5`
	ocpasswdBob   = `bob:vpn:$5$axUkG/ma0GVzM.VQ$RNreqUTa9PSr5ypQO59gXImDxktSWdgRosmdonC8eqA`
	// ocpasswd -c FILE -l bob
	ocpasswdBobLocked = `bob:vpn:!$5$axUkG/ma0GVzM.VQ$RNreqUTa9PSr5ypQO59gXImDxktSWdgRosmdonC8eqA`
	// echo -n secret | argon2 kvpnsaltkvpnsalt -id -t 2 -k 19456 -p 1 -l 32 -e
	argon2CLISecret = `$argon2id$v=19$m=19456,t=2,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac`
)

// glibc crypt(3) vectors, from openssl passwd and python3's crypt module.
var cryptVectors = []struct {
	name, password, hash string
}{
	// openssl passwd -6 -salt saltsalt secret
	{"sha512", "secret", `$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1`},
	// openssl passwd -5 -salt saltsalt secret
	{"sha256", "secret", `$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA`},
	// crypt.crypt("correct horse", crypt.mksalt(crypt.METHOD_SHA512))
	{"sha512 random salt", "correct horse", `$6$9NhT15FJtI94XdQB$ZiV/MxaA8xZTKQEq8eUJybAgW2jsT.afzwX2ycRfQp0tSTr8ALn2W3eK51AwF1tKpyXM0XasdF7IBLgSYrS4t1`},
	{"sha512 utf-8", "pässwörd", `$6$ONOe5BqkfIEyIePm$t1opVrD.CrMCui8VjWhXs9Ykt.QX7Sgd2U7W0B9MVJwhToBa/2ySWLBZMnxGrY.GNMXR/Ah9tbTzZ/0OC8jGX/`},
	{"sha512 rounds", "secret", `$6$rounds=1000$saltsalt$LAV5VE5Y7w1d73x1mFNspYWUpazfmwv2SoepNXNKJ/otop/Zok96Hr8Q13LEv0DRY/x8v0/crpIjl8NJSAqXV/`},
	{"sha256 rounds", "secret", `$5$rounds=10000$saltsalt$RUsnTSO2Cw.gkRW/RZSmG6BCeuh1a6eDbZfnX4oz1c5`},
	// Salt given as "toolongsaltstring1234": glibc keeps 16 characters.
	{"sha256 default rounds spelled out", "x", `$5$rounds=5000$toolongsaltstrin$5HmNJgXuzoMFjHvwjTNI8Mc7HEWhS69Cp384XR7KDD3`},
	{"sha512 empty password", "", `$6$emptypw$TWmzQ8/uLn1BFSZ5Lkfum8lAba5vixF9Nl3Aiof.Praatq9nh0kkPuTdoVrIL6du0L6LAoadbPq.q.D7keveg/`},
}

// writeFile writes content to a new file in a test directory and returns
// its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ocpasswd")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, content string) *PasswdFile {
	t.Helper()
	p, err := LoadPasswd(writeFile(t, content))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHashPasswordRoundTrip(t *testing.T) {
	h, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	// 16-byte salt and 32-byte key are 22 and 43 base64 characters.
	want := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !want.MatchString(h) {
		t.Fatalf("HashPassword = %q, not in the expected PHC form", h)
	}
	v, err := parseHash(h)
	if err != nil {
		t.Fatal(err)
	}
	if !v.verify("correct horse battery staple") {
		t.Error("right password rejected")
	}
	for _, wrong := range []string{"", "correct horse battery stapl", "Correct horse battery staple"} {
		if v.verify(wrong) {
			t.Errorf("wrong password %q accepted", wrong)
		}
	}
	h2, _ := HashPassword("correct horse battery staple")
	if h2 == h {
		t.Error("two hashes of the same password are equal: salt not random")
	}
}

func TestArgon2ExternalVectors(t *testing.T) {
	for _, tc := range []struct{ password, hash string }{
		{"secret", argon2CLISecret},
		// echo -n 'correct horse' | argon2 othersaltvalue12 -id -t 3 -k 65536 -p 4 -l 32 -e
		{"correct horse", `$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0dmFsdWUxMg$Se+K2JhP+LUgQsQFMxAmbAVlZcnH/i4kfj7qazHzPIE`},
	} {
		v, err := parseHash(tc.hash)
		if err != nil {
			t.Fatalf("parse %s: %v", tc.hash, err)
		}
		if !v.verify(tc.password) {
			t.Errorf("%s: right password rejected", tc.hash)
		}
		if v.verify(tc.password + "!") {
			t.Errorf("%s: wrong password accepted", tc.hash)
		}
		if got := v.(argon2Hash).String(); got != tc.hash {
			t.Errorf("String() = %q, want %q", got, tc.hash)
		}
	}
}

func TestCryptVectors(t *testing.T) {
	for _, tc := range cryptVectors {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, "u:*:"+tc.hash+"\n")
			if !p.Verify("u", tc.password) {
				t.Error("right password rejected")
			}
			if p.Verify("u", tc.password+"x") || p.Verify("u", "wrong") {
				t.Error("wrong password accepted")
			}
		})
	}
}

func TestOcpasswdFile(t *testing.T) {
	p := load(t, ocpasswdAlice+"\n"+ocpasswdBob+"\n")
	if !p.Verify("alice", "secret") || !p.Verify("bob", "hunter2") {
		t.Error("right password rejected")
	}
	if p.Verify("alice", "hunter2") || p.Verify("bob", "secret") {
		t.Error("another user's password accepted")
	}
	if p.Verify("carol", "secret") || p.Verify("", "") {
		t.Error("unknown user accepted")
	}
	if got := p.Users(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("Users() = %q", got)
	}
	if g, ok := p.Group("bob"); !ok || g != "vpn" {
		t.Errorf("Group(bob) = %q, %v", g, ok)
	}
	if g, ok := p.Group("alice"); !ok || g != "*" {
		t.Errorf("Group(alice) = %q, %v", g, ok)
	}
}

func TestLockedUser(t *testing.T) {
	p := load(t, ocpasswdBobLocked+"\n")
	if p.Verify("bob", "hunter2") {
		t.Error("locked user accepted")
	}
	if !slices.Equal(p.Users(), []string{"bob"}) {
		t.Error("locked user missing from Users()")
	}
}

func TestFileSyntax(t *testing.T) {
	p := load(t, "# kvpn users\n\n   \n  # indented comment\r\n"+
		"carol:"+argon2CLISecret+"\r\n"+ // two-field form, CRLF
		"dave::"+argon2CLISecret) // empty group, no final newline
	if !slices.Equal(p.Users(), []string{"carol", "dave"}) {
		t.Fatalf("Users() = %q", p.Users())
	}
	if !p.Verify("carol", "secret") || !p.Verify("dave", "secret") {
		t.Error("right password rejected")
	}
	if g, ok := p.Group("carol"); !ok || g != "" {
		t.Errorf("Group(carol) = %q, %v", g, ok)
	}
}

func TestEmptyFile(t *testing.T) {
	p := load(t, "")
	if len(p.Users()) != 0 || p.Verify("a", "") {
		t.Error("empty file has users")
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := LoadPasswd(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadErrors(t *testing.T) {
	good := ocpasswdAlice + "\n# comment\n\n"
	for _, tc := range []struct {
		line, why string
	}{
		{"nohashhere", "fields"},
		{"a:b:c:d", "fields"},
		{"eve:*:", "unsupported hash"},
		{"eve:*:plaintext", "unsupported hash"},
		{"eve:*:$1$md5salt$abcdefghijklmnopqrstuv", "unsupported hash"},
		{":*:" + argon2CLISecret, "empty username"},
		{" eve:*:" + argon2CLISecret, "whitespace"},
		{"e ve:*:" + argon2CLISecret, "whitespace"},
		{"eve:*:" + argon2CLISecret + " ", "key"},
		{"alice:*:" + argon2CLISecret, "duplicate user"},
		{"eve:*:!!" + argon2CLISecret, "locked twice"},
		{"eve:*:$6$saltsalt$short", "digest"},
		{"eve:*:$6$$" + strings.Repeat("a", 86), "salt"},
		{"eve:*:$6$saltsaltsaltsalt1$" + strings.Repeat("a", 86), "salt"},
		{"eve:*:$5$rounds=x$saltsalt$" + strings.Repeat("a", 43), "rounds"},
		{"eve:*:$5$rounds=1000$" + strings.Repeat("a", 43), "malformed crypt hash"},
		{"eve:*:$5$saltsalt$" + strings.Repeat("!", 43), "digest"},
		{"eve:*:$argon2id$v=16$m=19456,t=2,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "version"},
		{"eve:*:$argon2id$v=19$m=4000000000,t=2,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "m="},
		{"eve:*:$argon2id$v=19$m=19456,t=0,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "t="},
		{"eve:*:$argon2id$v=19$t=2,m=19456,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "parameters"},
		{"eve:*:$argon2id$v=19$m=19456,t=2,p=1$a3ZwbnNhbHRrdnBuc2FsdA==$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "salt"},
		{"eve:*:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "salt length"},
		{"eve:*:$argon2id$v=19$m=19456,t=2,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkaux", "key"},
		{"eve:*:$argon2i$v=19$m=19456,t=2,p=1$a3ZwbnNhbHRrdnBuc2FsdA$hkauxoFnDSDeGi4qnKT5BZOuFnDRDyiZQ6u+SjOk1ac", "unsupported hash"},
	} {
		path := writeFile(t, good+tc.line+"\n")
		_, err := LoadPasswd(path)
		if err == nil {
			t.Errorf("%q: loaded without error", tc.line)
			continue
		}
		// The bad line is line 4: the good user, a comment, a blank line.
		if want := path + ":4: "; !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q does not name %q", tc.line, err, want)
		}
		if !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%q: error %q does not mention %q", tc.line, err, tc.why)
		}
	}
}

func TestCheckUser(t *testing.T) {
	for _, u := range []string{"", "a:b", "a b", "a\nb", "a\tb", "a\rb", "a\x00b", "#a", "a\u00a0b"} {
		if checkUser(u) == nil {
			t.Errorf("checkUser(%q) accepted", u)
		}
	}
	for _, u := range []string{"alice", "a.b-c_d@example.com", "Jürgen", "a#b"} {
		if err := checkUser(u); err != nil {
			t.Errorf("checkUser(%q) = %v", u, err)
		}
	}
}

func TestSetPasswordDeleteUser(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ocpasswd")

	// A missing file is created, mode 0600, with group "*" like ocpasswd.
	if err := SetPassword(path, "alice", "one"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "alice:*:$argon2id$") || strings.Count(string(data), "\n") != 1 {
		t.Errorf("file = %q", data)
	}

	// Existing content is kept; an existing user keeps their group, and
	// the two-field form stays two-field.
	os.WriteFile(path, []byte("# header\n"+string(data)+ocpasswdBob+"\ncarol:"+argon2CLISecret+"\n"), 0o644)
	if err := SetPassword(path, "bob", "two"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "carol", "three"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "dave", "four"); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"alice": "one", "bob": "two", "carol": "three", "dave": "four"} {
		if !p.Verify(user, pw) {
			t.Errorf("%s: password %q rejected", user, pw)
		}
	}
	if p.Verify("bob", "hunter2") {
		t.Error("bob's old password still accepted")
	}
	data, _ = os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := []string{"# header", "alice:*:", "bob:vpn:$argon2id$", "carol:$argon2id$", "dave:*:$argon2id$"}
	if len(lines) != len(want) {
		t.Fatalf("file has %d lines, want %d:\n%s", len(lines), len(want), data)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d = %q, want prefix %q", i+1, lines[i], want[i])
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after rewrite = %v, want 0600", fi.Mode().Perm())
	}

	if err := DeleteUser(path, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := DeleteUser(path, "bob"); err == nil {
		t.Error("deleting an absent user succeeded")
	}
	p, err = LoadPasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Users(); !slices.Equal(got, []string{"alice", "carol", "dave"}) {
		t.Errorf("Users() after delete = %q", got)
	}

	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory has %d entries, want 1", len(entries))
	}
}

func TestSetPasswordErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ocpasswd")
	for _, u := range []string{"", "a:b", "a b", "a\nb"} {
		if err := SetPassword(path, u, "pw"); err == nil {
			t.Errorf("SetPassword(%q) succeeded", u)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a rejected username created the file")
	}
	if err := DeleteUser(path, "alice"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DeleteUser on a missing file: %v", err)
	}

	// A file that does not parse is left alone, and the error says where.
	bad := ocpasswdAlice + "\ngarbage\n"
	os.WriteFile(path, []byte(bad), 0o600)
	err := SetPassword(path, "bob", "pw")
	if err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("SetPassword on a bad file: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != bad {
		t.Error("bad file was rewritten")
	}
}

func FuzzParsePasswdLine(f *testing.F) {
	for _, s := range []string{
		ocpasswdAlice, ocpasswdBob, ocpasswdBobLocked,
		"carol:" + argon2CLISecret, "# comment", "", "\r", "a:b:c:d",
		"u:*:" + cryptVectors[0].hash, "u:*:" + cryptVectors[4].hash,
		"u:*:$5$rounds=", "u:*:$6$", "u:*:$argon2id$", "u:*:!",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		l, ok, err := parsePasswdLine(line)
		if err != nil && ok {
			t.Fatal("ok with an error")
		}
		if !ok {
			return
		}
		if checkUser(l.user) != nil || l.hash == nil {
			t.Fatalf("accepted bad line %q", line)
		}
		// What we accept, we must be able to write back unchanged.
		l2, ok2, err := parsePasswdLine(l.format())
		if !ok2 || err != nil || l2.user != l.user || l2.group != l.group || l2.hashText != l.hashText || l2.twoField != l.twoField {
			t.Fatalf("%q does not round-trip: %q, %v", line, l.format(), err)
		}
	})
}

// TestLongPasswordNotHashed: a 60 KB password against an ocpasswd
// SHA-crypt hash is refused at once (before the fix it was hashed, about
// 10 s of CPU), and so is an over-long username.
func TestLongPasswordNotHashed(t *testing.T) {
	p := load(t, ocpasswdAlice+"\n")
	long := strings.Repeat("p", 60<<10)
	start := time.Now()
	if p.Verify("alice", long) {
		t.Fatal("60 KB password accepted")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("60 KB password took %v to refuse", d)
	}
	if p.Verify(strings.Repeat("u", MaxUsernameLen+1), "secret") {
		t.Fatal("over-long username accepted")
	}
	// At the bound, the password is still checked.
	if p.Verify("alice", strings.Repeat("p", MaxPasswordLen)) || !p.Verify("alice", "secret") {
		t.Fatal("bound changed what verifies")
	}
}

func TestPasswdGroups(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	h, _ := HashPassword("pw")
	os.WriteFile(p, []byte("a:eng, ops ,eng:"+h+"\nb:*:"+h+"\nc:"+h+"\nd:sales:"+h+"\n"), 0o600)
	f, err := LoadPasswd(p)
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string][]string{"a": {"eng", "ops"}, "b": nil, "c": nil, "d": {"sales"}, "x": nil} {
		if got := f.Groups(user); !slices.Equal(got, want) {
			t.Errorf("Groups(%q) = %q, want %q", user, got, want)
		}
	}
}

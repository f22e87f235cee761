package auth

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
)

// defaultGroup is the group field ocpasswd writes for a user without one.
const defaultGroup = "*"

// PasswdFile is a loaded password file in ocserv's "plain" format: one
// "username:group:hash" line per user (or "username:hash"), with blank lines
// and # comments ignored. It is immutable once loaded, so it is safe for
// concurrent use; to pick up changes, load the file again.
type PasswdFile struct {
	users map[string]passwdLine
	dummy verifier // verified for unknown users (dummy.go); nil: dummyHash
}

// passwdLine is one user's line of a password file.
type passwdLine struct {
	user     string
	group    string // "" in the two-field form
	twoField bool   // the line had no group field
	hashText string
	hash     verifier
}

// format renders l as a line of a password file, without the newline.
func (l passwdLine) format() string {
	if l.twoField {
		return l.user + ":" + l.hashText
	}
	return l.user + ":" + l.group + ":" + l.hashText
}

// parsePasswdLine parses one line (without its newline). ok is false for
// blank and comment lines.
func parsePasswdLine(line string) (l passwdLine, ok bool, err error) {
	line = strings.TrimSuffix(line, "\r") // tolerate files edited on Windows
	if t := strings.TrimSpace(line); t == "" || t[0] == '#' {
		return l, false, nil
	}
	f := strings.Split(line, ":")
	switch len(f) {
	case 2:
		l = passwdLine{user: f[0], twoField: true, hashText: f[1]}
	case 3:
		l = passwdLine{user: f[0], group: f[1], hashText: f[2]}
	default:
		return l, false, fmt.Errorf("want username:group:hash, got %d fields", len(f))
	}
	if err := checkUser(l.user); err != nil {
		return l, false, err
	}
	if strings.ContainsFunc(l.group, unicode.IsControl) {
		return l, false, errors.New("group contains a control character")
	}
	if l.hash, err = parseHash(l.hashText); err != nil {
		return l, false, err
	}
	return l, true, nil
}

// checkUser rejects usernames that cannot round-trip through the file
// format: ':' separates fields, a newline ends the line, and whitespace
// would be trimmed or mistyped by users. A leading '#' would make the line
// a comment.
func checkUser(user string) error {
	switch {
	case user == "":
		return errors.New("empty username")
	case strings.ContainsRune(user, ':'):
		return fmt.Errorf("username %q contains ':'", user)
	case strings.ContainsFunc(user, unicode.IsSpace):
		return fmt.Errorf("username %q contains whitespace", user)
	case strings.ContainsFunc(user, unicode.IsControl):
		return fmt.Errorf("username %q contains a control character", user)
	case user[0] == '#':
		return fmt.Errorf("username %q starts with '#'", user)
	}
	return nil
}

// LoadPasswd reads and parses the password file at path. A missing file
// gives an error wrapping fs.ErrNotExist; a bad line gives an error naming
// the file and line number.
func LoadPasswd(path string) (*PasswdFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	p := &PasswdFile{users: make(map[string]passwdLine)}
	var order []string
	n := 0
	for line := range strings.Lines(string(data)) {
		n++
		l, ok, err := parsePasswdLine(strings.TrimSuffix(line, "\n"))
		if err != nil {
			return nil, fmt.Errorf("auth: %s:%d: %w", path, n, err)
		}
		if !ok {
			continue
		}
		// ocserv would silently use the first line; refusing makes the
		// ambiguity visible instead.
		if _, dup := p.users[l.user]; dup {
			return nil, fmt.Errorf("auth: %s:%d: duplicate user %q", path, n, l.user)
		}
		p.users[l.user] = l
		order = append(order, l.user)
	}
	p.dummy = pickDummy(p.users, order)
	return p, nil
}

// Bounds on the credentials a login may carry. SHA-crypt's cost grows with
// the password's length (a 60 KB password took 9.6 s of CPU), so a longer
// password is refused before any hash is computed; the username bound keeps
// logs and throttle keys small. No real password or username is near them.
const (
	MaxPasswordLen = 1024 // bytes
	MaxUsernameLen = 256  // bytes
)

// CredentialsTooLong reports whether user or password is over its bound
// (MaxUsernameLen, MaxPasswordLen).
func CredentialsTooLong(user, password string) bool {
	return len(user) > MaxUsernameLen || len(password) > MaxPasswordLen
}

// Verify reports whether password is user's password. A locked user never
// verifies. The work done is the same for unknown users as for known ones
// (one hash computation), so response time does not reveal which usernames
// exist: an unknown user's password is checked against a dummy hash of the
// kind and cost most users in the file have (dummy.go), a locked user's
// against its own hash. Credentials over their bounds (CredentialsTooLong)
// never verify and cost no hash: that reveals only their length, which the
// client knows.
func (p *PasswdFile) Verify(user, password string) bool {
	if CredentialsTooLong(user, password) {
		return false
	}
	l, ok := p.users[user]
	if !ok {
		d := p.dummy
		if d == nil {
			d = dummyHash
		}
		d.verify(password)
		return false
	}
	return l.hash.verify(password)
}

// Users returns the usernames in the file, sorted.
func (p *PasswdFile) Users() []string {
	return slices.Sorted(maps.Keys(p.users))
}

// Group returns user's group field ("*" or "" when it has none) and whether
// the user exists.
func (p *PasswdFile) Group(user string) (string, bool) {
	l, ok := p.users[user]
	return l.group, ok
}

// Groups returns user's groups: the group field split at commas (ocserv's
// "user:group1,group2:hash"), blanks trimmed, without ocpasswd's "*" for
// none. The first is the user's default group.
func (p *PasswdFile) Groups(user string) []string {
	l, ok := p.users[user]
	if !ok {
		return nil
	}
	var out []string
	for g := range strings.SplitSeq(l.group, ",") {
		if g = strings.TrimSpace(g); g != "" && g != defaultGroup && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// SetPassword sets user's password in the file at path to an argon2id hash
// of password. An existing user keeps their line's group; a new user is
// appended with group "*", as ocpasswd does. The file is created if
// missing. Other lines, comments included, are kept as they are.
//
// The file is replaced atomically (mode 0600), so a server reading it sees
// the old or the new version, never a partial one. Concurrent writers are
// not serialized: the last one wins.
func SetPassword(path, user, password string) error {
	if err := checkUser(user); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	return editPasswd(path, user, true, func(lines []string, idx int, old passwdLine) ([]string, error) {
		if idx < 0 {
			l := passwdLine{user: user, group: defaultGroup, hashText: hash}
			return append(lines, l.format()), nil
		}
		old.hashText = hash
		lines[idx] = old.format()
		return lines, nil
	})
}

// DeleteUser removes user's line from the file at path, replacing the file
// atomically as SetPassword does. It is an error if the user is not there.
func DeleteUser(path, user string) error {
	return editPasswd(path, user, false, func(lines []string, idx int, _ passwdLine) ([]string, error) {
		if idx < 0 {
			return nil, fmt.Errorf("auth: %s: no user %q", path, user)
		}
		return slices.Delete(lines, idx, idx+1), nil
	})
}

// editPasswd reads the file at path, finds user's line (idx -1 if absent),
// lets edit change the lines and writes the result back atomically. A
// missing file counts as empty when create is set. The whole file must
// parse: rewriting a file the server cannot load would hide the problem.
func editPasswd(path, user string, create bool, edit func(lines []string, idx int, l passwdLine) ([]string, error)) error {
	data, err := os.ReadFile(path)
	if err != nil && !(create && errors.Is(err, fs.ErrNotExist)) {
		return fmt.Errorf("auth: %w", err)
	}
	var lines []string
	idx, found := -1, passwdLine{}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSuffix(line, "\n")
		l, ok, err := parsePasswdLine(line)
		if err != nil {
			return fmt.Errorf("auth: %s:%d: %w", path, len(lines)+1, err)
		}
		if ok && l.user == user {
			if idx >= 0 {
				return fmt.Errorf("auth: %s:%d: duplicate user %q", path, len(lines)+1, user)
			}
			idx, found = len(lines), l
		}
		lines = append(lines, line)
	}
	if lines, err = edit(lines, idx, found); err != nil {
		return err
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return writeFileAtomic(path, []byte(b.String()))
}

// writeFileAtomic writes data to a temporary file in path's directory and
// renames it over path, so readers never see a half-written file and a
// crash leaves either the old or the new contents.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	// CreateTemp makes the file with mode 0600, which is what a file of
	// password hashes should have.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("auth: writing %s: %w", path, err)
		}
	}()
	if err = f.Chmod(0o600); err != nil { // in case CreateTemp's mode ever changes
		return err
	}
	keepGroupRead(f, path)
	if _, err = f.Write(data); err != nil {
		return err
	}
	// Sync before rename so that after a crash the new name never points
	// at an empty file.
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable. Best effort: not every system can
	// sync a directory, and the data is already safe under some name.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Active reports whether user exists and is not locked: a session resumed
// from a cookie needs no password, but only an account that could log in
// may resume one.
func (p *PasswdFile) Active(user string) bool {
	l, ok := p.users[user]
	if !ok {
		return false
	}
	_, locked := l.hash.(lockedHash)
	return !locked
}

// Generation returns a short hash of user's line in the file, and whether
// the user exists and is not locked. It changes whenever the line does:
// a new password, a new group, or a lock (ocpasswd -l prefixes the hash
// with "!"). Nodes sharing the file agree on it without talking, so a
// cookie carrying it is refused everywhere once the entry changes.
func (p *PasswdFile) Generation(user string) (uint64, bool) {
	l, ok := p.users[user]
	if !ok {
		return 0, false
	}
	if _, locked := l.hash.(lockedHash); locked {
		return 0, false
	}
	sum := sha256.Sum256([]byte("kvpn user generation\x00" + l.format()))
	return binary.BigEndian.Uint64(sum[:8]), true
}

// Package otp is vpnd's one-time password second factor: it reads a users
// file in liboath's format (the "otp" file of ocserv's plain auth,
// pam_oath's usersfile) and checks HOTP (RFC 4226) and TOTP (RFC 6238)
// codes against it, refusing a code that was used before.
//
// A line of the file is
//
//	TYPE USER PIN SECRET [COUNTER [LAST-OTP [LAST-TIME]]]
//
// separated by blanks, where TYPE is HOTP, HOTP/E, HOTP/E/N (counter
// based, N = 6, 7 or 8 digits) or HOTP/T30, HOTP/T30/N, HOTP/T60,
// HOTP/T60/N (time based, 30 or 60 s steps); SECRET is the key in hex.
// PIN is not checked (ocserv passes no PIN to liboath either: the
// password is checked against the password file). COUNTER, LAST-OTP and
// LAST-TIME are what liboath writes back after a login; vpnd reads them
// to start its replay protection where liboath left off, and keeps its own
// record in a state file rather than rewriting the users file. Lines whose
// first field is no known type (comments, blank lines) are skipped, as
// liboath skips them.
package otp

import (
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Kind is counter based (HOTP) or time based (TOTP).
type Kind int

const (
	HOTP Kind = iota
	TOTP
)

func (k Kind) String() string {
	if k == TOTP {
		return "totp"
	}
	return "hotp"
}

// MaxSecretBytes bounds a token's key. liboath takes at most 32 bytes;
// 64 leaves room for SHA-512-sized keys some provisioning tools make.
const MaxSecretBytes = 64

// Token is one user's line of the users file.
type Token struct {
	User   string
	Kind   Kind
	Digits int           // 6, 7 or 8
	Step   time.Duration // TOTP time step (30 or 60 s); 0 for HOTP
	Secret []byte
	// Counter is liboath's moving factor: for HOTP the counter of the
	// last code accepted (0 in a new file).
	Counter uint64
	// LastOTP and LastTime are the last code liboath accepted and when
	// ("" and zero if the line has none).
	LastOTP  string
	LastTime time.Time
	Line     int // line number in the file
}

// File is a parsed users file. It is immutable once loaded.
type File struct {
	tokens map[string]*Token
}

// Token returns user's token, or nil if the file has none for user.
func (f *File) Token(user string) *Token {
	if f == nil {
		return nil
	}
	return f.tokens[user]
}

// Len is the number of users with a token.
func (f *File) Len() int { return len(f.tokens) }

// Load reads and parses the users file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("otp: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("otp: %s:%w", path, err)
	}
	return f, nil
}

// maxFileBytes bounds the users file: a million users' lines are well
// under it.
const maxFileBytes = 256 << 20

// Parse parses the contents of a users file. A line with a known type but
// a bad field, or a second line for a user, is an error naming the line
// (liboath would use the first of two lines; refusing makes the ambiguity
// visible). Errors start with the line number.
func Parse(data []byte) (*File, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf(" file of %d bytes is too large", len(data))
	}
	f := &File{tokens: map[string]*Token{}}
	n := 0
	for line := range strings.Lines(string(data)) {
		n++
		t, ok, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%d: %w", n, err)
		}
		if !ok {
			continue
		}
		t.Line = n
		if prev, dup := f.tokens[t.User]; dup {
			return nil, fmt.Errorf("%d: second line for user %q (first on line %d)", n, t.User, prev.Line)
		}
		f.tokens[t.User] = t
	}
	return f, nil
}

// parseType parses the TYPE field as liboath's parse_type does.
func parseType(s string) (kind Kind, digits int, step time.Duration, ok bool) {
	switch s {
	case "HOTP", "HOTP/E", "HOTP/E/6":
		return HOTP, 6, 0, true
	case "HOTP/E/7":
		return HOTP, 7, 0, true
	case "HOTP/E/8":
		return HOTP, 8, 0, true
	}
	for _, p := range []struct {
		prefix string
		step   time.Duration
	}{{"HOTP/T30", 30 * time.Second}, {"HOTP/T60", 60 * time.Second}} {
		rest, found := strings.CutPrefix(s, p.prefix)
		if !found {
			continue
		}
		switch rest {
		case "", "/6":
			return TOTP, 6, p.step, true
		case "/7":
			return TOTP, 7, p.step, true
		case "/8":
			return TOTP, 8, p.step, true
		}
	}
	return 0, 0, 0, false
}

// timeFormat is liboath's "%Y-%m-%dT%H:%M:%SL": local time, with a
// literal L.
const timeFormat = "2006-01-02T15:04:05L"

// parseLine parses one line. ok is false for lines liboath skips.
func parseLine(line string) (t *Token, ok bool, err error) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return nil, false, nil
	}
	kind, digits, step, known := parseType(fields[0])
	if !known {
		if strings.HasPrefix(fields[0], "HOTP") {
			// liboath skips it silently; a typo here would lock the
			// user out with no clue, so say so.
			return nil, false, fmt.Errorf("unknown token type %q (want HOTP, HOTP/E[/6|7|8] or HOTP/T30|T60[/6|7|8])", fields[0])
		}
		return nil, false, nil
	}
	if len(fields) < 4 {
		return nil, false, errors.New("want TYPE USER PIN SECRET [COUNTER [LAST-OTP [LAST-TIME]]]")
	}
	if len(fields) > 7 {
		return nil, false, fmt.Errorf("%d fields, at most 7", len(fields))
	}
	t = &Token{User: fields[1], Kind: kind, Digits: digits, Step: step}
	if strings.ContainsFunc(t.User, unicode.IsControl) {
		return nil, false, errors.New("user name contains a control character")
	}
	if t.Secret, err = hex.DecodeString(fields[3]); err != nil {
		return nil, false, fmt.Errorf("secret is not hex: %w", err)
	}
	if len(t.Secret) == 0 || len(t.Secret) > MaxSecretBytes {
		return nil, false, fmt.Errorf("secret of %d bytes (want 1..%d)", len(t.Secret), MaxSecretBytes)
	}
	if len(fields) > 4 {
		if t.Counter, err = strconv.ParseUint(fields[4], 10, 64); err != nil {
			return nil, false, fmt.Errorf("counter %q: %w", fields[4], errors.Unwrap(err))
		}
	}
	if len(fields) > 5 {
		t.LastOTP = fields[5]
		if len(t.LastOTP) != t.Digits || strings.ContainsFunc(t.LastOTP, func(r rune) bool { return r < '0' || r > '9' }) {
			return nil, false, fmt.Errorf("last OTP %q is not %d digits", t.LastOTP, t.Digits)
		}
	}
	if len(fields) > 6 {
		if t.LastTime, err = time.ParseInLocation(timeFormat, fields[6], time.Local); err != nil {
			return nil, false, fmt.Errorf("last time %q: want liboath's %s", fields[6], "YYYY-MM-DDTHH:MM:SSL")
		}
	}
	return t, true, nil
}

// secret32 is the key as the base32 text github.com/pquerna/otp takes.
func (t *Token) secret32() string {
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(t.Secret)
}

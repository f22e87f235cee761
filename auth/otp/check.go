package otp

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	potp "github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// Search windows. A TOTP code is good for the time step it was made in and
// TOTPWindow steps either side (clock skew, a code typed at the end of its
// step); an HOTP code for the next HOTPWindow counters (button presses that
// never reached the server), as ocserv's HOTP_WINDOW.
const (
	TOTPWindow = 1
	HOTPWindow = 20
)

// Errors from Check.
var (
	ErrNoToken  = errors.New("no one-time password token for the user")
	ErrInvalid  = errors.New("wrong one-time password")
	ErrReplayed = errors.New("one-time password already used")
)

// Checker checks codes and remembers, for each user's token, the first
// time step (TOTP) or counter (HOTP) not used yet: a code of an earlier one
// is refused, so a code works once even within its window. It is safe for
// concurrent use; concurrent checks for one user are serialized, so of two
// logins racing with the same code only one succeeds.
//
// The record is kept in a state file (written atomically after every
// accepted code) so that it survives a restart. It is keyed by user and a
// hash of the token's key: a user given a new token starts afresh.
type Checker struct {
	mu   sync.Mutex
	path string            // state file, "" for memory only
	next map[string]uint64 // stateKey -> first unused step or counter
	now  func() time.Time
	// SaveError, if set, is told when the state file could not be
	// written. The code is still accepted (the record is kept in memory);
	// a restart before a successful save forgets it.
	SaveError func(error)
}

// NewChecker makes a checker whose record lives in the file at path
// ("" keeps it in memory only). A missing file is an empty record.
func NewChecker(path string) (*Checker, error) {
	c := &Checker{path: path, next: map[string]uint64{}, now: time.Now}
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("otp: state: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("otp: state %s:%d: want USER KEY-ID NEXT", path, n)
		}
		v, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("otp: state %s:%d: %w", path, n, err)
		}
		c.next[f[0]+" "+f[1]] = v
	}
	return c, sc.Err()
}

// stateKey names a user's token in the record.
func stateKey(t *Token) string {
	sum := sha256.Sum256(append([]byte("kvpn otp key\x00"), t.Secret...))
	return t.User + " " + hex.EncodeToString(sum[:8])
}

// code computes the token's code at counter (HOTP) or time step (TOTP).
func (t *Token) code(n uint64) (string, error) {
	return hotp.GenerateCodeCustom(t.secret32(), n, hotp.ValidateOpts{
		Digits: potp.Digits(t.Digits), Algorithm: potp.AlgorithmSHA1,
	})
}

// Code is the token's code at counter n (HOTP) or for the time step that
// holds at (TOTP), for tests and tools.
func (t *Token) Code(n uint64, at time.Time) (string, error) {
	if t.Kind == TOTP {
		n = uint64(at.Unix()) / uint64(t.Step/time.Second)
	}
	return t.code(n)
}

// initialNext is where a token's record starts when the checker has none:
// after what liboath recorded in the users file.
func (t *Token) initialNext() uint64 {
	if t.LastOTP == "" {
		if t.Kind == HOTP {
			return t.Counter
		}
		return 0
	}
	if t.Kind == HOTP {
		return t.Counter + 1 // liboath's counter is the last one used
	}
	if t.LastTime.IsZero() {
		return 0
	}
	// liboath's TOTP record is the last code and when it was accepted:
	// find its step near that time (ocserv searches 20 steps).
	step := uint64(t.Step / time.Second)
	at := uint64(max(t.LastTime.Unix(), 0)) / step
	for s := at - min(at, HOTPWindow); s <= at+HOTPWindow; s++ {
		if c, err := t.code(s); err == nil && c == t.LastOTP {
			return s + 1
		}
	}
	return at + 1
}

// Check reports whether code is t's current code and not used before
// (nil), or why not: ErrInvalid or ErrReplayed. An accepted code's step
// or counter, and every earlier one, cannot be used again.
func (c *Checker) Check(t *Token, code string) error {
	if t == nil {
		return ErrNoToken
	}
	code = strings.TrimSpace(code)
	if len(code) != t.Digits || strings.ContainsFunc(code, func(r rune) bool { return r < '0' || r > '9' }) {
		return ErrInvalid
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := stateKey(t)
	next, ok := c.next[key]
	if !ok {
		next = t.initialNext()
	}
	var lo, hi uint64
	if t.Kind == TOTP {
		now := uint64(max(c.now().Unix(), 0)) / uint64(t.Step/time.Second)
		lo, hi = now-min(now, TOTPWindow), now+TOTPWindow
	} else {
		lo, hi = next-min(next, HOTPWindow), next+HOTPWindow
	}
	found, replay := uint64(0), false
	matched := false
	for n := lo; n <= hi; n++ {
		want, err := t.code(n)
		if err != nil {
			return fmt.Errorf("otp: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) != 1 {
			continue
		}
		if n < next {
			replay = true // a used step or counter; a later one may match too
			continue
		}
		found, matched = n, true
		break
	}
	if !matched {
		if replay {
			return ErrReplayed
		}
		return ErrInvalid
	}
	c.next[key] = found + 1
	if err := c.saveLocked(); err != nil && c.SaveError != nil {
		c.SaveError(err)
	}
	return nil
}

// saveLocked writes the record to the state file atomically.
func (c *Checker) saveLocked() error {
	if c.path == "" {
		return nil
	}
	keys := make([]string, 0, len(c.next))
	for k := range c.next {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString("# kvpn one-time password record: USER KEY-ID first-unused-step-or-counter\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d\n", k, c.next[k])
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), "."+filepath.Base(c.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("otp: state: %w", err)
	}
	_, err = tmp.WriteString(b.String())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("otp: state %s: %w", c.path, err)
	}
	return nil
}

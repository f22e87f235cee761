package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Revoked cookies: the file of ticket IDs an operator disconnected,
// refused until the tickets would have expired anyway.

// Revoked is a set of session identities that must not be resumed,
// each kept until the last cookie naming it has expired. It is local to
// one node (docs/scaling.md): a logout on one node does not reach the
// others before the cookie expires. With a file (LoadRevoked) it survives
// restarts: a logged-out cookie stays refused after vpnd restarts. Safe
// for concurrent use; a nil set holds nothing and ignores Add.
type Revoked struct {
	mu  sync.Mutex
	m   map[Cookie]time.Time
	ver uint64 // bumped by every change of m

	path   string     // "" keeps the set in memory only
	saveMu sync.Mutex // serialises writing the file
	saved  uint64     // ver last written (under saveMu)
}

// MaxRevokedFile bounds the revocation file read at start (about 80
// bytes a line: over 400,000 revoked sessions).
const MaxRevokedFile = 32 << 20

// LoadRevoked returns the set stored at path (none yet if the file does
// not exist), entries expired by now left out. Every Add is appended to
// path at once; Sweep rewrites it atomically (a temporary file renamed
// over it, mode 0600) when entries expired, so a crash leaves the old or
// the new set, never half of one. Entries another process appended
// meanwhile (a node sharing the directory) are merged in at each
// rewrite, not lost.
func LoadRevoked(path string, now time.Time) (*Revoked, error) {
	r := &Revoked{m: map[Cookie]time.Time{}, path: path}
	m, err := readRevoked(path, now)
	if err != nil {
		return nil, err
	}
	r.m = m
	return r, nil
}

// readRevoked reads the file at path; a missing file is an empty set.
func readRevoked(path string, now time.Time) (map[Cookie]time.Time, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[Cookie]time.Time{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("revoked sessions file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRevokedFile+1))
	if err != nil {
		return nil, fmt.Errorf("revoked sessions file: %w", err)
	}
	if len(data) > MaxRevokedFile {
		return nil, fmt.Errorf("revoked sessions file %s is larger than %d bytes", path, MaxRevokedFile)
	}
	m, err := parseRevoked(data, now)
	if err != nil {
		return nil, fmt.Errorf("revoked sessions file %s: %w", path, err)
	}
	return m, nil
}

// parseRevoked parses the file's lines: "<64 hex digits> <unix seconds>",
// the session identity and when its revocation ends; blank lines and #
// comments are ignored, entries that ended by now are dropped.
func parseRevoked(data []byte, now time.Time) (map[Cookie]time.Time, error) {
	m := map[Cookie]time.Time{}
	line := 0
	for l := range strings.Lines(string(data)) {
		line++
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		idText, untilText, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("line %d: want session-id and expiry", line)
		}
		id, err := ParseCookie(idText)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		u, err := strconv.ParseInt(untilText, 10, 64)
		if err != nil || u < 0 {
			return nil, fmt.Errorf("line %d: bad expiry %q", line, untilText)
		}
		until := time.Unix(u, 0)
		if !now.Before(until) {
			continue
		}
		if old, ok := m[id]; !ok || until.After(old) {
			m[id] = until
		}
	}
	return m, nil
}

// formatRevoked renders m in the form parseRevoked reads, sorted.
func formatRevoked(m map[Cookie]time.Time) []byte {
	lines := make([]string, 0, len(m))
	for id, until := range m {
		lines = append(lines, id.String()+" "+strconv.FormatInt(until.Unix(), 10))
	}
	slices.Sort(lines)
	var b bytes.Buffer
	b.WriteString("# kvpn revoked sessions (logged out or ended on this node): session-id until-unix-time\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Add revokes id until until (later wins when added twice). With a file,
// the entry is appended to it before Add returns (one line, one write:
// ending N sessions costs N small writes, not N rewrites of a file of N
// lines); the error says if that failed (the revocation holds in memory
// all the same). Sweep rewrites the file without the expired entries.
func (r *Revoked) Add(id Cookie, until time.Time) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	changed := false
	if old, ok := r.m[id]; !ok || until.After(old) {
		r.m[id] = until
		r.ver++
		changed = true
	}
	r.mu.Unlock()
	if !changed || r.path == "" {
		return nil
	}
	return r.appendLine(id, until)
}

// appendLine appends one entry to the file (O_APPEND: one write at the
// end, also with another node appending to a shared file), or writes the
// whole set if the file does not exist yet. Under saveMu, so that a
// rewrite cannot rename a new file over the one being appended to.
func (r *Revoked) appendLine(id Cookie, until time.Time) error {
	line := id.String() + " " + strconv.FormatInt(until.Unix(), 10) + "\n"
	r.saveMu.Lock()
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	r.saveMu.Unlock()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return r.save(time.Now()) // creates it, with its header, mode 0600
	case err != nil:
		return fmt.Errorf("auth: appending to revoked sessions file %s: %w", r.path, err)
	}
	return nil
}

// save rewrites the file with the set, merging in what the file holds
// now (entries another node appended), if the set changed since the last
// rewrite.
func (r *Revoked) save(now time.Time) error {
	if r.path == "" {
		return nil
	}
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.mu.Lock()
	dirty := r.ver != r.saved
	r.mu.Unlock()
	if !dirty {
		return nil
	}
	disk, err := readRevoked(r.path, now)
	if err != nil {
		disk = nil // rewrite a damaged file from memory
	}
	r.mu.Lock()
	for id, until := range disk {
		if old, ok := r.m[id]; !ok || until.After(old) {
			r.m[id] = until
		}
	}
	data, ver := formatRevoked(r.m), r.ver
	r.mu.Unlock()
	if werr := writeFileAtomic(r.path, data); werr != nil {
		return werr
	}
	r.saved = ver
	return err
}

// Has reports whether id is revoked.
func (r *Revoked) Has(id Cookie) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[id]
	return ok
}

// Sweep forgets entries whose cookies have expired by now, and writes
// the file if any went.
func (r *Revoked) Sweep(now time.Time) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	expired := false
	for id, until := range r.m {
		if !now.Before(until) {
			delete(r.m, id)
			expired = true
		}
	}
	if expired {
		r.ver++
	}
	r.mu.Unlock()
	if !expired {
		return nil // appends already hold every change
	}
	return r.save(now)
}

// Len returns the number of revoked sessions held.
func (r *Revoked) Len() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

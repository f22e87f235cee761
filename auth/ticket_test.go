package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKeys(t testing.TB, seeds ...byte) *TicketKeys {
	t.Helper()
	var raw [][]byte
	for _, s := range seeds {
		raw = append(raw, bytes.Repeat([]byte{s}, TicketKeyBytes))
	}
	k, err := NewTicketKeys(raw...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sampleTicket(t testing.TB) *Ticket {
	id, err := NewCookie()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	return &Ticket{Session: id, User: "alice", Node: "node-a", Issued: now, Expires: now.Add(5 * time.Minute),
		Addr4: netip.MustParseAddr("10.77.0.9"), Addr6: netip.MustParseAddr("fd00::9"),
		Login: now.Add(-time.Hour), Gen: 0x0123456789abcdef}
}

func TestTicketRoundTrip(t *testing.T) {
	k := testKeys(t, 1)
	want := sampleTicket(t)
	s, err := k.Seal(want)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "alice") || strings.ContainsAny(s, "=+/; ") {
		t.Fatalf("cookie %q shows the user or has characters that need quoting", s)
	}
	got, err := k.OpenTicket(s)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
	// No addresses: they come back invalid, not as 0.0.0.0.
	want.Addr4, want.Addr6 = netip.Addr{}, netip.Addr{}
	s, _ = k.Seal(want)
	got, err = k.OpenTicket(s)
	if err != nil || got.Addr4.IsValid() || got.Addr6.IsValid() {
		t.Fatalf("ticket without addresses: %+v, %v", got, err)
	}
	// Two seals of the same ticket differ (random nonce).
	s2, _ := k.Seal(want)
	if s2 == s {
		t.Fatal("two seals are identical")
	}
	// A certificate login's flag comes back; a password ticket's
	// length is unchanged by it (no flag byte).
	want.Cert = true
	s3, _ := k.Seal(want)
	got, err = k.OpenTicket(s3)
	if err != nil || *got != *want {
		t.Fatalf("certificate ticket: %+v, %v", got, err)
	}
	if len(s3) <= len(s) || len(s2) != len(s) {
		t.Fatalf("lengths: password %d and %d, certificate %d", len(s), len(s2), len(s3))
	}
	// A group comes back, with or without the certificate flag.
	for _, cert := range []bool{false, true} {
		want.Cert, want.Group = cert, "engineering"
		s4, _ := k.Seal(want)
		got, err = k.OpenTicket(s4)
		if err != nil || *got != *want {
			t.Fatalf("ticket with group (cert %v): %+v, %v", cert, got, err)
		}
	}
}

func TestTicketRefused(t *testing.T) {
	k := testKeys(t, 1)
	s, err := k.Seal(sampleTicket(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	flip := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, tc := range []struct {
		name, cookie string
		want         error
	}{
		{"empty", "", ErrTicketMalformed},
		{"old hex cookie", strings.Repeat("ab", 32), ErrTicketMalformed},
		{"not base64", s[:20] + "!" + s[21:], ErrTicketMalformed},
		{"truncated", s[:len(s)-8], ErrTicketForged},
		{"cut to the header", s[:30], ErrTicketMalformed},
		{"too long", s + strings.Repeat("A", MaxTicketLen), ErrTicketMalformed},
		{"version", flip(0), ErrTicketMalformed},
		{"nonce bit", flip(3), ErrTicketForged},
		{"ciphertext bit", flip(20), ErrTicketForged},
		{"tag bit", flip(len(raw) - 1), ErrTicketForged},
	} {
		if _, err := k.OpenTicket(tc.cookie); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := testKeys(t, 2).OpenTicket(s); !errors.Is(err, ErrTicketForged) {
		t.Errorf("other key: got %v, want %v", err, ErrTicketForged)
	}
}

func TestTicketKeyRollover(t *testing.T) {
	old, both, next := testKeys(t, 1), testKeys(t, 2, 1), testKeys(t, 2)
	s, _ := old.Seal(sampleTicket(t))
	if _, err := both.OpenTicket(s); err != nil {
		t.Fatalf("second key does not open: %v", err)
	}
	s2, _ := both.Seal(sampleTicket(t))
	if _, err := next.OpenTicket(s2); err != nil {
		t.Fatalf("first key does not seal: %v", err)
	}
	if _, err := next.OpenTicket(s); !errors.Is(err, ErrTicketForged) {
		t.Fatalf("removed key still opens: %v", err)
	}
}

func TestTicketExpiry(t *testing.T) {
	tk := sampleTicket(t)
	if err := tk.Check(tk.Issued); err != nil {
		t.Fatal(err)
	}
	if err := tk.Check(tk.Expires.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := tk.Check(tk.Expires); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("at expiry: %v", err)
	}
}

func TestTicketSealRefusesLongNames(t *testing.T) {
	tk := sampleTicket(t)
	tk.User = strings.Repeat("u", 256)
	if _, err := testKeys(t, 1).Seal(tk); err == nil {
		t.Fatal("sealed a 256-byte user name")
	}
	tk.User = strings.Repeat("u", 255)
	tk.Node = strings.Repeat("n", 255)
	tk.Group = strings.Repeat("g", 255)
	tk.Cert = true
	s, err := testKeys(t, 1).Seal(tk)
	if err != nil || len(s) > MaxTicketLen {
		t.Fatalf("longest ticket: %d chars, %v", len(s), err)
	}
}

func TestLoadOrCreateTicketKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "cookie-key")
	k1, created, err := LoadOrCreateTicketKeys(path)
	if err != nil || !created {
		t.Fatalf("create: %v, created %v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v", st.Mode(), err)
	}
	k2, created, err := LoadOrCreateTicketKeys(path)
	if err != nil || created {
		t.Fatalf("reload: %v, created %v", err, created)
	}
	s, _ := k1.Seal(sampleTicket(t))
	if _, err := k2.OpenTicket(s); err != nil {
		t.Fatalf("reloaded key does not open: %v", err)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"short", "abcd\n", ":1: want 64 hex digits"},
		{"not hex", strings.Repeat("zz", 32) + "\n", ":1: want 64 hex digits"},
		{"empty", "# nothing\n\n", "holds no key"},
	} {
		p := filepath.Join(dir, tc.name)
		os.WriteFile(p, []byte(tc.body), 0o600)
		if _, _, err := LoadOrCreateTicketKeys(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	p := filepath.Join(dir, "open")
	os.WriteFile(p, []byte(strings.Repeat("ab", 32)+"\n"), 0o644)
	os.Chmod(p, 0o644)
	if _, _, err := LoadOrCreateTicketKeys(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key file: %v", err)
	}
	os.Chmod(p, 0o600)
	if _, _, err := LoadOrCreateTicketKeys(p); err != nil {
		t.Errorf("0600 key file: %v", err)
	}
}

func TestRevoked(t *testing.T) {
	r := NewRevoked()
	a, _ := NewCookie()
	b, _ := NewCookie()
	now := time.Unix(1000, 0)
	r.Add(a, now.Add(time.Minute))
	r.Add(a, now.Add(time.Second)) // earlier: keeps the later one
	r.Add(b, now.Add(10*time.Second))
	if !r.Has(a) || !r.Has(b) || r.Len() != 2 {
		t.Fatal("revoked ids missing")
	}
	r.Sweep(now.Add(10 * time.Second))
	if !r.Has(a) || r.Has(b) {
		t.Fatalf("sweep at b's expiry: a %v, b %v", r.Has(a), r.Has(b))
	}
	r.Sweep(now.Add(time.Minute))
	if r.Len() != 0 {
		t.Fatal("not swept")
	}
	var none *Revoked // a server built without one
	none.Add(a, now.Add(time.Minute))
	none.Sweep(now)
	if none.Has(a) || none.Len() != 0 {
		t.Fatal("nil set holds an id")
	}
}

func TestCookieJarInsert(t *testing.T) {
	clk := newFakeClock()
	j := NewCookieJar[int](clk.Now)
	c, _ := NewCookie()
	if !j.Insert(c, 1, time.Minute) {
		t.Fatal("insert into empty jar")
	}
	if j.Insert(c, 2, time.Minute) {
		t.Fatal("insert replaced a live entry")
	}
	if v, ok := j.Lookup(c); !ok || v != 1 {
		t.Fatalf("lookup: %v %v", v, ok)
	}
	clk.Advance(time.Minute)
	if !j.Insert(c, 3, time.Minute) {
		t.Fatal("insert over an expired entry")
	}
	if v, _ := j.Lookup(c); v != 3 {
		t.Fatalf("lookup after re-insert: %v", v)
	}
}

// FuzzOpenTicket feeds arbitrary cookie text to the parser: it must never
// panic, and anything it accepts must seal again to a ticket that opens to
// the same fields.
func FuzzOpenTicket(f *testing.F) {
	k := testKeys(f, 1)
	s, _ := k.Seal(sampleTicket(f))
	f.Add(s)
	f.Add(s[:len(s)/2])
	f.Add("")
	f.Add(strings.Repeat("ab", 32))
	f.Add("AQ" + strings.Repeat("A", 200))
	f.Add("Ag" + strings.Repeat("A", 200))
	f.Fuzz(func(t *testing.T, in string) {
		tk, err := k.OpenTicket(in)
		if err != nil {
			if tk != nil {
				t.Fatal("ticket and error")
			}
			return
		}
		again, err := k.Seal(tk)
		if err != nil {
			t.Fatal(err)
		}
		back, err := k.OpenTicket(again)
		if err != nil || *back != *tk {
			t.Fatalf("reseal: %+v %v, want %+v", back, err, tk)
		}
	})
}

// TestTicketOldFormatRefused: a version 1 ticket (sealed before tickets
// carried the login time and the user's generation) is refused with its
// own error, never misread as a version 2 one.
func TestTicketOldFormatRefused(t *testing.T) {
	k := testKeys(t, 1)
	tk := sampleTicket(t)
	// The version 1 layout: identity, issued, expires, addresses, names.
	plain := append([]byte{}, tk.Session[:]...)
	plain = append(plain, make([]byte, 16+4+16)...)
	plain = append(plain, 1, 'n', 5)
	plain = append(plain, "alice"...)
	g := k.aeads[0]
	out := make([]byte, 1+g.NonceSize())
	out[0] = 1
	out = g.Seal(out, out[1:], plain, out[:1])
	if got, err := k.OpenTicket(base64.RawURLEncoding.EncodeToString(out)); !errors.Is(err, ErrTicketOldFormat) || got != nil {
		t.Fatalf("version 1 ticket: %+v, %v", got, err)
	}
}

// FuzzDecodeTicket fuzzes the field parser behind the MAC, which a fuzzer
// cannot reach through OpenTicket.
func FuzzDecodeTicket(f *testing.F) {
	f.Add(make([]byte, fixedPlain+2))
	f.Add(append(make([]byte, fixedPlain), 1, 'n', 1, 'u'))
	f.Add(append(make([]byte, fixedPlain), 200, 'n'))
	f.Fuzz(func(t *testing.T, p []byte) {
		tk, err := decodeTicket(p)
		if err == nil && (tk.User == "" || len(tk.User) > 255 || len(tk.Node) > 255) {
			t.Fatalf("accepted %+v", tk)
		}
	})
}

// TestRevokedFile: the set written by one instance is what the next
// loads, expired entries dropped; entries another writer put in the file
// are merged, not overwritten; the file is 0600.
func TestRevokedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	now := time.Unix(1_800_000_000, 0)
	r, err := LoadRevoked(path, now)
	if err != nil || r.Len() != 0 {
		t.Fatalf("missing file: %v %d", err, r.Len())
	}
	a, b, c := Cookie{1}, Cookie{2}, Cookie{3}
	if err := r.Add(a, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(b, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	other, _ := LoadRevoked(path, now) // a second writer on the same file
	other.Add(c, now.Add(time.Hour))
	r.Add(a, now.Add(2*time.Hour))
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v", st.Mode(), err)
	}
	back, err := LoadRevoked(path, now.Add(30*time.Minute)) // b has expired
	if err != nil {
		t.Fatal(err)
	}
	if !back.Has(a) || back.Has(b) || !back.Has(c) || back.Len() != 2 {
		t.Fatalf("loaded a=%v b=%v c=%v len %d", back.Has(a), back.Has(b), back.Has(c), back.Len())
	}
	back.Sweep(now.Add(90 * time.Minute)) // c expires, a (2 h) stays
	again, _ := LoadRevoked(path, now)
	if !again.Has(a) || again.Has(c) {
		t.Fatalf("after sweep: a=%v c=%v", again.Has(a), again.Has(c))
	}
	os.WriteFile(path, []byte("not a revocation\n"), 0o600)
	if _, err := LoadRevoked(path, now); err == nil {
		t.Fatal("damaged file loaded")
	}
}

// FuzzParseRevoked: the revoked sessions file parser never panics, and
// what it accepts formats back to a file that parses to the same set.
func FuzzParseRevoked(f *testing.F) {
	f.Add([]byte("# comment\n" + strings.Repeat("ab", 32) + " 1900000000\n"))
	f.Add([]byte(strings.Repeat("ab", 32) + " 1\n\n"))
	f.Add([]byte(strings.Repeat("AB", 32) + " 1900000000"))
	f.Add([]byte("x -1\n"))
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseRevoked(data, now)
		if err != nil {
			return
		}
		back, err := parseRevoked(formatRevoked(m), now)
		if err != nil || len(back) != len(m) {
			t.Fatalf("reformatted: %v, %d entries, want %d", err, len(back), len(m))
		}
		for id, u := range m {
			if !back[id].Equal(u) {
				t.Fatalf("entry %s: %v, want %v", id, back[id], u)
			}
		}
	})
}

// TestRevokedAppends: every Add reaches the file (a fresh load has them
// all) without rewriting it: the file only grows by one line per Add.
func TestRevokedAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	now := time.Now()
	r, err := LoadRevoked(path, now)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for i := range 50 {
		if err := r.Add(Cookie{byte(i), 1}, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, st.Size())
	}
	line := sizes[len(sizes)-1] - sizes[len(sizes)-2]
	if line != int64(len(Cookie{}.String())+1+len("1800000000")+1) {
		t.Errorf("an Add grew the file by %d bytes, want one line", line)
	}
	back, err := LoadRevoked(path, now)
	if err != nil || back.Len() != 50 {
		t.Fatalf("loaded %d of 50 (%v)", back.Len(), err)
	}
	if err := r.Sweep(now); err != nil { // nothing expired: no rewrite
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != sizes[len(sizes)-1] {
		t.Errorf("a sweep with nothing expired rewrote the file")
	}
}

// BenchmarkRevokedAdd: the cost of one more revocation with 10k already
// held (ending the sessions of a large node one by one).
func BenchmarkRevokedAdd(b *testing.B) {
	path := filepath.Join(b.TempDir(), "revoked")
	now := time.Now()
	r, _ := LoadRevoked(path, now)
	for i := range 10000 {
		r.Add(Cookie{byte(i), byte(i >> 8), 2}, now.Add(time.Hour))
	}
	b.ResetTimer()
	for i := range b.N {
		r.Add(Cookie{byte(i), byte(i >> 8), byte(i >> 16), 3}, now.Add(time.Hour))
	}
}

// NewRevoked returns an empty set kept in memory only.
func NewRevoked() *Revoked { return &Revoked{m: map[Cookie]time.Time{}} }

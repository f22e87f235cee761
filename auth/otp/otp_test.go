package otp

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rfcSecret is the key of RFC 4226 and RFC 6238's test vectors.
var rfcSecret = hex.EncodeToString([]byte("12345678901234567890"))

func mustParse(t *testing.T, text string) *File {
	t.Helper()
	f, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestParse(t *testing.T) {
	f := mustParse(t, `# liboath users file
HOTP/T30 alice - `+rfcSecret+`
HOTP/T30/8	bob	1234	`+rfcSecret+`
HOTP carol - `+rfcSecret+` 5 755224 2024-01-02T03:04:05L
HOTP/E/7 dave - 00ff
HOTP/T60/6 erin + 00ff 0

not a token line
`)
	if f.Len() != 5 {
		t.Fatalf("%d tokens, want 5", f.Len())
	}
	for _, c := range []struct {
		user   string
		kind   Kind
		digits int
		step   time.Duration
	}{
		{"alice", TOTP, 6, 30 * time.Second}, {"bob", TOTP, 8, 30 * time.Second},
		{"carol", HOTP, 6, 0}, {"dave", HOTP, 7, 0}, {"erin", TOTP, 6, 60 * time.Second},
	} {
		tok := f.Token(c.user)
		if tok == nil || tok.Kind != c.kind || tok.Digits != c.digits || tok.Step != c.step {
			t.Errorf("%s: got %+v, want %v %d digits step %s", c.user, tok, c.kind, c.digits, c.step)
		}
	}
	carol := f.Token("carol")
	if carol.Counter != 5 || carol.LastOTP != "755224" || carol.LastTime.Year() != 2024 {
		t.Errorf("carol's liboath record: %+v", carol)
	}
	if f.Token("nobody") != nil {
		t.Error("token for a user not in the file")
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"HOTP/T31 alice - 00ff\n", "unknown token type"},
		{"HOTP/T30 alice -\n", "want TYPE USER PIN SECRET"},
		{"HOTP/T30 alice - zz\n", "not hex"},
		{"HOTP alice - 00ff x\n", "counter"},
		{"HOTP alice - 00ff 1 12345\n", "last OTP"},
		{"HOTP alice - 00ff 1 123456 yesterday\n", "last time"},
		{"HOTP alice - 00ff\nHOTP/T30 alice - 00ff\n", "2: second line for user"},
		{"HOTP alice - " + strings.Repeat("00", MaxSecretBytes+1) + "\n", "secret of"},
		{"HOTP alice - 00ff 1 2 3 4\n", "at most 7"},
	} {
		_, err := Parse([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.text, err, c.want)
		}
	}
}

// TestRFCVectors checks code computation against RFC 4226 appendix D and
// RFC 6238 appendix B (SHA-1, 8 digits).
func TestRFCVectors(t *testing.T) {
	f := mustParse(t, "HOTP h - "+rfcSecret+"\nHOTP/T30/8 t - "+rfcSecret+"\n")
	for i, want := range []string{"755224", "287082", "359152", "969429", "338314"} {
		if got, _ := f.Token("h").Code(uint64(i), time.Time{}); got != want {
			t.Errorf("HOTP counter %d: %s, want %s", i, got, want)
		}
	}
	for _, v := range []struct {
		unix int64
		want string
	}{{59, "94287082"}, {1111111109, "07081804"}, {1234567890, "89005924"}, {2000000000, "69279037"}} {
		if got, _ := f.Token("t").Code(0, time.Unix(v.unix, 0)); got != v.want {
			t.Errorf("TOTP at %d: %s, want %s", v.unix, got, v.want)
		}
	}
}

func newTestChecker(t *testing.T, path string, now *time.Time) *Checker {
	t.Helper()
	c, err := NewChecker(path)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return *now }
	c.SaveError = func(err error) { t.Errorf("saving state: %v", err) }
	return c
}

func TestTOTPWindowAndReplay(t *testing.T) {
	tok := mustParse(t, "HOTP/T30 alice - "+rfcSecret+"\n").Token("alice")
	now := time.Unix(1_700_000_010, 0) // 10 s into a step
	state := filepath.Join(t.TempDir(), "otp-state")
	c := newTestChecker(t, state, &now)
	at := func(d time.Duration) string {
		s, _ := tok.Code(0, now.Add(d))
		return s
	}
	if err := c.Check(tok, at(-60*time.Second)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("code two steps old: %v, want ErrInvalid", err)
	}
	if err := c.Check(tok, at(60*time.Second)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("code two steps ahead: %v, want ErrInvalid", err)
	}
	if err := c.Check(tok, "12345"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short code: %v", err)
	}
	prev := at(-30 * time.Second)
	if err := c.Check(tok, prev); err != nil {
		t.Fatalf("previous step's code: %v", err)
	}
	if err := c.Check(tok, prev); !errors.Is(err, ErrReplayed) {
		t.Fatalf("same code again: %v, want ErrReplayed", err)
	}
	cur := at(0)
	if err := c.Check(tok, cur); err != nil {
		t.Fatalf("current code: %v", err)
	}
	if err := c.Check(tok, prev); !errors.Is(err, ErrReplayed) {
		t.Fatalf("older code after a newer one: %v, want ErrReplayed", err)
	}
	// The record survives a restart.
	c2 := newTestChecker(t, state, &now)
	if err := c2.Check(tok, cur); !errors.Is(err, ErrReplayed) {
		t.Fatalf("code replayed after restart: %v, want ErrReplayed", err)
	}
	if err := c2.Check(tok, at(30*time.Second)); err != nil {
		t.Fatalf("next step's code after restart: %v", err)
	}
	// Time moves on: the next step's code is used, the one after works.
	now = now.Add(60 * time.Second)
	if err := c2.Check(tok, at(0)); err != nil {
		t.Fatalf("a later code: %v", err)
	}
	// A new key for the user starts a new record.
	tok2 := mustParse(t, "HOTP/T30 alice - 00112233445566778899\n").Token("alice")
	code2, _ := tok2.Code(0, now)
	if err := c2.Check(tok2, code2); err != nil {
		t.Fatalf("new token's code: %v", err)
	}
}

func TestHOTPCounterAndReplay(t *testing.T) {
	now := time.Now()
	c := newTestChecker(t, "", &now)
	tok := mustParse(t, "HOTP alice - "+rfcSecret+"\n").Token("alice")
	code := func(n uint64) string { s, _ := tok.Code(n, time.Time{}); return s }
	if err := c.Check(tok, code(HOTPWindow+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("code beyond the look-ahead: %v", err)
	}
	if err := c.Check(tok, code(3)); err != nil {
		t.Fatalf("code 3 (presses lost): %v", err)
	}
	for _, n := range []uint64{0, 3} {
		if err := c.Check(tok, code(n)); !errors.Is(err, ErrReplayed) {
			t.Fatalf("code %d after 3: %v, want ErrReplayed", n, err)
		}
	}
	if err := c.Check(tok, code(4)); err != nil {
		t.Fatalf("code 4: %v", err)
	}

	// liboath's record: counter 5 with its code used.
	tok = mustParse(t, "HOTP bob - "+rfcSecret+" 5 "+code(5)+"\n").Token("bob")
	if err := c.Check(tok, code(5)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("liboath's last code: %v, want ErrReplayed", err)
	}
	if err := c.Check(tok, code(6)); err != nil {
		t.Fatalf("code after liboath's: %v", err)
	}
}

func TestTOTPFromLiboathRecord(t *testing.T) {
	now := time.Unix(1_700_000_010, 0)
	tok := mustParse(t, "HOTP/T30 alice - "+rfcSecret+"\n").Token("alice")
	last, _ := tok.Code(0, now)
	line := "HOTP/T30 alice - " + rfcSecret + " 0 " + last + " " + now.Add(5*time.Second).Format(timeFormat) + "\n"
	tok = mustParse(t, line).Token("alice")
	c := newTestChecker(t, "", &now)
	if err := c.Check(tok, last); !errors.Is(err, ErrReplayed) {
		t.Fatalf("code liboath recorded: %v, want ErrReplayed", err)
	}
	next, _ := tok.Code(0, now.Add(30*time.Second))
	if err := c.Check(tok, next); err != nil {
		t.Fatalf("next code: %v", err)
	}
}

// TestConcurrentReplay: of many logins racing with one code, one wins.
func TestConcurrentReplay(t *testing.T) {
	now := time.Unix(1_700_000_010, 0)
	c := newTestChecker(t, filepath.Join(t.TempDir(), "s"), &now)
	tok := mustParse(t, "HOTP/T30 alice - "+rfcSecret+"\n").Token("alice")
	code, _ := tok.Code(0, now)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.Check(tok, code) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d logins accepted one code, want 1", ok)
	}
}

func TestStateFileErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	os.WriteFile(p, []byte("alice abc\n"), 0o600)
	if _, err := NewChecker(p); err == nil {
		t.Fatal("malformed state file accepted")
	}
	os.WriteFile(p, []byte("# comment\nalice 0011 x\n"), 0o600)
	if _, err := NewChecker(p); err == nil {
		t.Fatal("non-numeric state accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("HOTP/T30 alice - " + rfcSecret + "\n"))
	f.Add([]byte("HOTP carol - 00ff 5 755224 2024-01-02T03:04:05L\n# x\n"))
	f.Add([]byte("HOTP/T60/8\tbob\t+\t00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		for _, tok := range file.tokens {
			if tok.Digits < 6 || tok.Digits > 8 || len(tok.Secret) == 0 || len(tok.Secret) > MaxSecretBytes {
				t.Fatalf("bad token accepted: %+v", tok)
			}
			if _, err := tok.Code(tok.Counter, time.Unix(0, 0)); err != nil {
				t.Fatalf("token accepted but no code: %v", err)
			}
			tok.initialNext()
		}
	})
}

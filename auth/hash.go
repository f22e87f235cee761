package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/GehirnInc/crypt"
	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for hashes that kvpn writes. They are the OWASP
// Password Storage Cheat Sheet recommendation for argon2id (19 MiB, two
// passes, one lane): tens of milliseconds per login, cheap enough for a VPN
// server that verifies a password once per session, yet memory-hard enough
// to make offline guessing on GPUs expensive. One lane keeps a single login
// from occupying several cores.
const (
	argon2Memory  = 19456 // KiB
	argon2Time    = 2
	argon2Threads = 1
	argon2SaltLen = 16 // bytes; 128 bits makes salt reuse negligible
	argon2KeyLen  = 32 // bytes
)

// Bounds on argon2id parameters read from a file. Hashes made by other
// tools may use other costs, but a corrupt or hostile line such as m=4000000000
// must not let one login attempt exhaust the server's memory or CPU.
const (
	maxArgon2Memory  = 1 << 20 // KiB (1 GiB)
	maxArgon2Time    = 64
	minArgon2SaltLen = 8
	maxArgon2SaltLen = 64
	minArgon2KeyLen  = 16
	maxArgon2KeyLen  = 64
)

// lockPrefix marks a hash disabled by "ocpasswd -l": the line stays valid
// but no password matches it.
const lockPrefix = "!"

var errUnsupportedHash = errors.New("unsupported hash format (want $argon2id$, $6$ or $5$)")

// b64 is the PHC string format's base64: standard alphabet, no padding.
// Strict rejects non-canonical encodings so every hash has one spelling.
var b64 = base64.RawStdEncoding.Strict()

// verifier checks a password against one stored hash. Implementations
// compare in constant time.
type verifier interface {
	verify(password string) bool
}

// parseHash parses the hash field of a password file line.
func parseHash(s string) (verifier, error) {
	if rest, ok := strings.CutPrefix(s, lockPrefix); ok {
		inner, err := parseHash(rest)
		if err != nil {
			return nil, err
		}
		if _, nested := inner.(lockedHash); nested {
			return nil, errors.New("hash locked twice")
		}
		return lockedHash{inner}, nil
	}
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, sha512_crypt.MagicPrefix):
		return parseCrypt(s, sha512_crypt.New(), 86)
	case strings.HasPrefix(s, sha256_crypt.MagicPrefix):
		return parseCrypt(s, sha256_crypt.New(), 43)
	}
	return nil, errUnsupportedHash
}

// lockedHash is a hash disabled with ocpasswd -l. It still computes the
// inner hash so that a locked account answers as slowly as any other.
type lockedHash struct{ inner verifier }

func (h lockedHash) verify(password string) bool {
	h.inner.verify(password)
	return false
}

// HashPassword returns an argon2id hash of password in PHC string form,
// with a fresh random salt and the package's default parameters.
func HashPassword(password string) (string, error) {
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: reading random salt: %w", err)
	}
	h := argon2Hash{
		memory:  argon2Memory,
		time:    argon2Time,
		threads: argon2Threads,
		salt:    salt,
	}
	h.key = h.derive(password, argon2KeyLen)
	return h.String(), nil
}

// argon2Hash is a parsed $argon2id$ PHC string.
type argon2Hash struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func (h argon2Hash) derive(password string, keyLen uint32) []byte {
	return argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, keyLen)
}

func (h argon2Hash) verify(password string) bool {
	hashed(h)
	got := h.derive(password, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}

// String formats h as a PHC string.
func (h argon2Hash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.memory, h.time, h.threads,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// parseArgon2id parses "$argon2id$v=19$m=M,t=T,p=P$salt$key".
func parseArgon2id(s string) (argon2Hash, error) {
	var h argon2Hash
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return h, errors.New("malformed argon2id hash")
	}
	// The Go package implements only version 0x13 (19), the current one.
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, fmt.Errorf("unsupported argon2id version %q", f[2])
	}
	p, err := parseArgon2Params(f[3])
	if err != nil {
		return h, err
	}
	h.memory, h.time, h.threads = uint32(p[0]), uint32(p[1]), uint8(p[2])

	if h.salt, err = b64.DecodeString(f[4]); err != nil {
		return h, errors.New("argon2id salt is not unpadded base64")
	}
	if h.key, err = b64.DecodeString(f[5]); err != nil {
		return h, errors.New("argon2id key is not unpadded base64")
	}
	if n := len(h.salt); n < minArgon2SaltLen || n > maxArgon2SaltLen {
		return h, fmt.Errorf("argon2id salt length %d out of range", n)
	}
	if n := len(h.key); n < minArgon2KeyLen || n > maxArgon2KeyLen {
		return h, fmt.Errorf("argon2id key length %d out of range", n)
	}
	return h, nil
}

// parseArgon2Params parses "m=M,t=T,p=P" (in that order, as the PHC format
// requires) and checks the values against the package's bounds.
func parseArgon2Params(s string) ([3]uint64, error) {
	var v [3]uint64
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return v, errors.New("argon2id parameters must be m=,t=,p=")
	}
	for i, name := range [3]string{"m=", "t=", "p="} {
		num, ok := strings.CutPrefix(f[i], name)
		if !ok {
			return v, errors.New("argon2id parameters must be m=,t=,p=")
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			return v, fmt.Errorf("argon2id parameter %s%s is not a number", name, num)
		}
		v[i] = n
	}
	m, t, p := v[0], v[1], v[2]
	switch {
	case p < 1 || p > 255:
		return v, fmt.Errorf("argon2id p=%d out of range", p)
	case t < 1 || t > maxArgon2Time:
		return v, fmt.Errorf("argon2id t=%d out of range", t)
	case m < 8*p || m > maxArgon2Memory: // argon2 needs 8 KiB per lane
		return v, fmt.Errorf("argon2id m=%d out of range", m)
	}
	return v, nil
}

// cryptHash is a glibc-style SHA-crypt hash: "$6$[rounds=N$]salt$sum" (or
// $5$), the form ocpasswd writes.
type cryptHash struct {
	crypter crypt.Crypter
	setting string // everything before the final "$": crypt(3)'s salt argument
	sum     string // the encoded derived key
}

// parseCrypt checks the shape of a SHA-crypt hash whose prefix has already
// been matched; sumLen is the length of the encoded digest.
func parseCrypt(s string, c crypt.Crypter, sumLen int) (cryptHash, error) {
	// Strip the 3-byte "$N$" prefix and split what remains.
	f := strings.Split(s[3:], "$")
	if len(f) == 3 {
		rounds, ok := strings.CutPrefix(f[0], "rounds=")
		// At most 9 digits: glibc caps rounds at 999999999.
		if !ok || rounds == "" || len(rounds) > 9 || strings.Trim(rounds, "0123456789") != "" {
			return cryptHash{}, errors.New("malformed rounds= in crypt hash")
		}
		f = f[1:]
	} else if len(f) != 2 || strings.HasPrefix(f[0], "rounds=") {
		return cryptHash{}, errors.New("malformed crypt hash")
	}
	salt, sum := f[0], f[1]
	// glibc uses at most 16 salt characters and writes back only those.
	if salt == "" || len(salt) > 16 {
		return cryptHash{}, errors.New("crypt salt must be 1 to 16 characters")
	}
	if len(sum) != sumLen || strings.Trim(sum, cryptAlphabet) != "" {
		return cryptHash{}, errors.New("malformed crypt digest")
	}
	return cryptHash{crypter: c, setting: s[:len(s)-len(sum)-1], sum: sum}, nil
}

// cryptAlphabet is the base64 variant used by crypt(3).
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func (h cryptHash) verify(password string) bool {
	hashed(h)
	// Pass only the setting, not the full hash: the library mistakes
	// "salt$sum" for the salt when a rounds= field is present.
	out, err := h.crypter.Generate([]byte(password), []byte(h.setting))
	if err != nil {
		return false
	}
	got := out[strings.LastIndexByte(out, '$')+1:]
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.sum)) == 1
}

// dummyHash is verified against when the user is unknown, so that an
// attacker cannot tell valid usernames by how fast the answer comes. It uses
// the default parameters, the cost of every hash kvpn writes; its key is
// all zeros, which no password derives in practice (and Verify ignores the
// result anyway).
var dummyHash = argon2Hash{
	memory:  argon2Memory,
	time:    argon2Time,
	threads: argon2Threads,
	salt:    []byte("kvpn-dummy-salt!"),
	key:     make([]byte, argon2KeyLen),
}

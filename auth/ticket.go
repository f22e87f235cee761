package auth

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A Ticket is what a signed session cookie carries. Any vpnd node holding
// the shared cookie key can open it and resume the session it names,
// without the password and without having seen the login: the cookie is
// the session's state.
type Ticket struct {
	Session Cookie     // the session's identity (also the in-memory jar key)
	User    string     // who logged in
	Node    string     // which node issued this ticket (logs only)
	Issued  time.Time  // when it was issued (second precision)
	Expires time.Time  // not valid at or after this (second precision)
	Addr4   netip.Addr // tunnel IPv4 address last held, invalid if none
	Addr6   netip.Addr // tunnel IPv6 address last held, invalid if none
	// Login is when the user logged in with a password (second
	// precision). Refreshes and resumes keep it, so a session has an
	// absolute lifetime counted from it (session-timeout) however often
	// its cookie is renewed.
	Login time.Time
	// Gen is the user's generation in the password file at login
	// (PasswdFile.Generation): every node sharing the file computes the
	// same one, so a user changed, locked or deleted there is refused
	// everywhere without the nodes talking.
	Gen uint64
	// Cert is whether the login was made with a client certificate: the
	// cookie is then good only over a connection presenting a valid
	// certificate of User. Sealed as one byte after the user name, only
	// when set, so password cookies keep their format.
	Cert bool
	// Group is the group the session logged in to (select-group), ""
	// for none. Sealed after the flags byte, only when set.
	Group string
}

// TicketKeyBytes is the size of a cookie key (AES-256).
const TicketKeyBytes = 32

// ticketVersion is the first byte of every sealed ticket, so the format
// can change without old cookies being misread. Version 2 added the
// login time and the user's generation; version 1 tickets, which have
// neither, are refused (ErrTicketOldFormat): the user logs in again.
const ticketVersion = 2

// ticketVersion1 is the first format, still recognised to refuse it.
const ticketVersion1 = 1

// MaxTicketLen bounds the cookie text accepted before any decoding: a
// ticket with a 255-byte user, node and group name is under 1200 characters.
const MaxTicketLen = 1280

// Errors from OpenTicket. Each says what is wrong without revealing
// anything about the key.
var (
	ErrTicketMalformed = errors.New("cookie is malformed (not a kvpn session cookie, or truncated)")
	ErrTicketForged    = errors.New("cookie failed authentication (tampered with, or sealed with another key)")
	ErrTicketExpired   = errors.New("cookie has expired")
	ErrTicketOldFormat = errors.New("cookie was sealed in an older format (no login time or user generation); log in again")
)

// TicketKeys seals and opens tickets with AES-256-GCM. The first key
// seals; every key opens, so a new key can be rolled out to all nodes
// before it becomes the first one (docs/scaling.md).
type TicketKeys struct {
	aeads []cipher.AEAD
}

// NewTicketKeys builds the sealer from raw 32-byte keys, first one sealing.
func NewTicketKeys(keys ...[]byte) (*TicketKeys, error) {
	if len(keys) == 0 {
		return nil, errors.New("no cookie key")
	}
	k := &TicketKeys{}
	for i, key := range keys {
		if len(key) != TicketKeyBytes {
			return nil, fmt.Errorf("cookie key %d is %d bytes, want %d", i+1, len(key), TicketKeyBytes)
		}
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		g, err := cipher.NewGCM(b)
		if err != nil {
			return nil, err
		}
		k.aeads = append(k.aeads, g)
	}
	return k, nil
}

// LoadOrCreateTicketKeys reads a cookie key file: one key per line, 64 hex
// digits each (what `openssl rand -hex 32` prints), blank lines and #
// comments ignored, the first key sealing. If the file does not exist it
// is created with one random key, mode 0600, so a single node's cookies
// survive its restarts. A file that others may read is refused: whoever
// reads the key can log in as anyone.
func LoadOrCreateTicketKeys(path string) (keys *TicketKeys, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKeyFile(path); err != nil {
			return nil, false, err
		}
		created = true
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, false, fmt.Errorf("cookie key file: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("cookie key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("cookie key file %s has mode %04o: others may read it (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	var raw [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := hex.DecodeString(s)
		if err != nil || len(k) != TicketKeyBytes {
			return nil, false, fmt.Errorf("cookie key file %s:%d: want %d hex digits (openssl rand -hex %d)", path, line, 2*TicketKeyBytes, TicketKeyBytes)
		}
		raw = append(raw, k)
	}
	if len(raw) == 0 {
		return nil, false, fmt.Errorf("cookie key file %s holds no key", path)
	}
	keys, err = NewTicketKeys(raw...)
	return keys, created, err
}

func createKeyFile(path string) error {
	var k [TicketKeyBytes]byte
	if _, err := rand.Read(k[:]); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("cookie key file: %w", err)
	}
	// O_EXCL: two nodes starting at once on a shared directory must not
	// overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cookie key file: %w", err)
	}
	_, err = fmt.Fprintf(f, "# kvpn cookie key: share this file (mode 0600) between all vpnd nodes\n%s\n", hex.EncodeToString(k[:]))
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// Seal returns t as cookie text: base64url(version | nonce | AES-GCM
// sealed fields). The fields are encrypted, so the user name is not
// readable from the cookie.
func (k *TicketKeys) Seal(t *Ticket) (string, error) {
	if len(t.User) > 255 || len(t.Node) > 255 || len(t.Group) > 255 {
		return "", errors.New("ticket: user, node or group name longer than 255 bytes")
	}
	plain := make([]byte, 0, fixedPlain+3+len(t.User)+len(t.Node))
	plain = append(plain, t.Session[:]...)
	plain = binary.BigEndian.AppendUint64(plain, uint64(t.Issued.Unix()))
	plain = binary.BigEndian.AppendUint64(plain, uint64(t.Expires.Unix()))
	plain = binary.BigEndian.AppendUint64(plain, uint64(t.Login.Unix()))
	plain = binary.BigEndian.AppendUint64(plain, t.Gen)
	var a4 [4]byte
	if t.Addr4.Is4() {
		a4 = t.Addr4.As4()
	}
	plain = append(plain, a4[:]...)
	var a6 [16]byte
	if t.Addr6.Is6() {
		a6 = t.Addr6.As16()
	}
	plain = append(plain, a6[:]...)
	plain = append(plain, byte(len(t.Node)))
	plain = append(plain, t.Node...)
	plain = append(plain, byte(len(t.User)))
	plain = append(plain, t.User...)
	var flags byte
	if t.Cert {
		flags |= ticketFlagCert
	}
	if t.Group != "" {
		flags |= ticketFlagGroup
	}
	if flags != 0 {
		plain = append(plain, flags)
	}
	if t.Group != "" {
		plain = append(plain, byte(len(t.Group)))
		plain = append(plain, t.Group...)
	}

	g := k.aeads[0]
	out := make([]byte, 1+g.NonceSize(), 1+g.NonceSize()+len(plain)+g.Overhead())
	out[0] = ticketVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return "", fmt.Errorf("ticket: reading random nonce: %w", err)
	}
	out = g.Seal(out, out[1:], plain, out[:1])
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// Flags, one byte after the user name when any is set: ticketFlagCert
// marks a certificate login, ticketFlagGroup a group name that follows
// (length-prefixed).
const (
	ticketFlagCert  = 1
	ticketFlagGroup = 2
)

// fixedPlain is the size of the fixed part of a ticket's fields.
const fixedPlain = CookieBytes + 8 + 8 + 8 + 8 + 4 + 16

// OpenTicket checks and decodes cookie text. It does not check expiry
// (see Ticket.Check): a node that holds the session in memory keeps
// honouring its cookie for as long as the session lives, as before.
func (k *TicketKeys) OpenTicket(s string) (*Ticket, error) {
	if len(s) > MaxTicketLen {
		return nil, ErrTicketMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrTicketMalformed
	}
	if len(raw) > 0 && raw[0] == ticketVersion1 {
		return nil, ErrTicketOldFormat
	}
	g := k.aeads[0]
	if len(raw) < 1+g.NonceSize()+g.Overhead()+fixedPlain+2 || raw[0] != ticketVersion {
		return nil, ErrTicketMalformed
	}
	nonce, sealed := raw[1:1+g.NonceSize()], raw[1+g.NonceSize():]
	var plain []byte
	for _, a := range k.aeads {
		if p, err := a.Open(nil, nonce, sealed, raw[:1]); err == nil {
			plain = p
			break
		}
	}
	if plain == nil {
		return nil, ErrTicketForged
	}
	return decodeTicket(plain)
}

// decodeTicket parses authenticated fields. Only a holder of the key can
// produce them, but they are parsed as carefully as any input.
func decodeTicket(p []byte) (*Ticket, error) {
	if len(p) < fixedPlain+2 {
		return nil, ErrTicketMalformed
	}
	t := &Ticket{}
	copy(t.Session[:], p)
	p = p[CookieBytes:]
	t.Issued = time.Unix(int64(binary.BigEndian.Uint64(p)), 0)
	t.Expires = time.Unix(int64(binary.BigEndian.Uint64(p[8:])), 0)
	t.Login = time.Unix(int64(binary.BigEndian.Uint64(p[16:])), 0)
	t.Gen = binary.BigEndian.Uint64(p[24:])
	p = p[32:]
	if a := netip.AddrFrom4([4]byte(p[:4])); !a.IsUnspecified() {
		t.Addr4 = a
	}
	if a := netip.AddrFrom16([16]byte(p[4:20])); !a.IsUnspecified() {
		t.Addr6 = a
	}
	p = p[20:]
	node, p, ok := lenPrefixed(p)
	if !ok {
		return nil, ErrTicketMalformed
	}
	user, p, ok := lenPrefixed(p)
	if !ok || user == "" {
		return nil, ErrTicketMalformed
	}
	if len(p) > 0 {
		flags := p[0]
		p = p[1:]
		if flags == 0 || flags&^(ticketFlagCert|ticketFlagGroup) != 0 {
			return nil, ErrTicketMalformed
		}
		t.Cert = flags&ticketFlagCert != 0
		if flags&ticketFlagGroup != 0 {
			if t.Group, p, ok = lenPrefixed(p); !ok || t.Group == "" {
				return nil, ErrTicketMalformed
			}
		}
		if len(p) != 0 {
			return nil, ErrTicketMalformed
		}
	}
	t.Node, t.User = node, user
	return t, nil
}

func lenPrefixed(p []byte) (string, []byte, bool) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return "", nil, false
	}
	n := int(p[0])
	return string(p[1 : 1+n]), p[1+n:], true
}

// Check reports ErrTicketExpired if t is not valid at now.
func (t *Ticket) Check(now time.Time) error {
	if !now.Before(t.Expires) {
		return ErrTicketExpired
	}
	return nil
}

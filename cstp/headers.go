package cstp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
)

// Reading and writing X-CSTP-* headers: names and values checked, routes
// and addresses parsed leniently as openconnect does.

// headerWriter renders "Name: value\r\n" lines, rejecting names and values
// that would corrupt the header block.
type headerWriter struct {
	b   []byte
	err error
}

func (hw *headerWriter) add(name, value string) {
	if hw.err != nil {
		return
	}
	if !validHeaderName(name) {
		hw.err = fmt.Errorf("cstp: invalid header name %q", name)
		return
	}
	if !validHeaderValue(value) {
		hw.err = fmt.Errorf("cstp: invalid value for header %s: %q", name, value)
		return
	}
	hw.b = append(hw.b, name...)
	hw.b = append(hw.b, ": "...)
	hw.b = append(hw.b, value...)
	hw.b = append(hw.b, "\r\n"...)
}

// finish ends the head with its blank line and writes it to w, unless a
// header was refused (the first error).
func (hw *headerWriter) finish(w io.Writer) error {
	if hw.err != nil {
		return hw.err
	}
	hw.b = append(hw.b, "\r\n"...)
	_, err := w.Write(hw.b)
	return err
}

// addExtra writes extension headers in sorted order, so output is
// deterministic.
func (hw *headerWriter) addExtra(h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			hw.add(k, v)
		}
	}
}

func (hw *headerWriter) addRoutes(kind string, routes []netip.Prefix) {
	for _, r := range routes {
		if !r.IsValid() {
			continue
		}
		if r.Addr().Is4() {
			hw.add("X-CSTP-Split-"+kind, formatRoute(r))
		} else {
			hw.add("X-CSTP-Split-"+kind+"-IP6", formatRoute(r))
		}
	}
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 tchar).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as a header value: no
// control characters other than tab (so no CR/LF header injection), which is
// also what Go's own header parser accepts.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headerReader looks up headers by canonical name and remembers which ones
// it consumed, so the rest can be returned as Extra.
type headerReader struct {
	h    http.Header
	seen map[string]bool
}

func (hr *headerReader) used(name string) string {
	k := textproto.CanonicalMIMEHeaderKey(name)
	if hr.seen == nil {
		hr.seen = map[string]bool{}
	}
	hr.seen[k] = true
	return k
}

// get returns the first value of a header, trimmed.
func (hr *headerReader) get(name string) string {
	if v := hr.h[hr.used(name)]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// all returns every value of a header, trimmed.
func (hr *headerReader) all(name string) []string {
	v := hr.h[hr.used(name)]
	out := make([]string, len(v))
	for i, s := range v {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

// seconds parses a non-negative number header; absent, empty or "none"
// (ocserv's spelling for no timeout) is 0.
func (hr *headerReader) seconds(name string) (int, error) {
	v := hr.get(name)
	if v == "" || v == "none" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("cstp: bad %s %q", name, v)
	}
	return n, nil
}

func (hr *headerReader) routes(names ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, name := range names {
		for _, v := range hr.all(name) {
			r, err := parseRoute(v)
			if err != nil {
				return nil, fmt.Errorf("cstp: bad route syntax in %s %q: %v", name, v, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// extra returns the X- headers not consumed, or nil.
func (hr *headerReader) extra() http.Header {
	var out http.Header
	for k, v := range hr.h {
		if hr.seen[k] || len(k) < 2 || !strings.EqualFold(k[:2], "X-") {
			continue
		}
		if out == nil {
			out = http.Header{}
		}
		out[k] = slices.Clone(v)
	}
	return out
}

// lenientInt parses a non-negative number the way a C atoi-based parser
// would accept it, returning 0 for anything unusable.
func lenientInt(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// parseAddr parses an IP address without zone, unmapping IPv4-in-IPv6.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("zoned address")
	}
	return a.Unmap(), nil
}

// parseRoute parses a split route: "ADDR/DOTTED-MASK" or "ADDR/LEN" for
// IPv4, "ADDR/LEN" for IPv6, or a bare address (a host route). The result
// is masked, so it can be handed to the routing table as is.
func parseRoute(s string) (netip.Prefix, error) {
	addrPart, maskPart, hasMask := strings.Cut(s, "/")
	a, err := parseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, errors.New("bad address")
	}
	n := a.BitLen()
	switch {
	case !hasMask:
	case a.Is4() && strings.Contains(maskPart, "."):
		m, err := parseAddr(maskPart)
		if err != nil || !m.Is4() {
			return netip.Prefix{}, errors.New("bad netmask")
		}
		var ok bool
		if n, ok = maskLen(m); !ok {
			return netip.Prefix{}, errors.New("non-contiguous netmask")
		}
	default:
		if maskPart == "" || len(maskPart) > 3 || strings.Trim(maskPart, "0123456789") != "" {
			return netip.Prefix{}, errors.New("bad prefix length")
		}
		n, _ = strconv.Atoi(maskPart)
		if n > a.BitLen() {
			return netip.Prefix{}, errors.New("prefix length out of range")
		}
	}
	return netip.PrefixFrom(a, n).Masked(), nil
}

// maskLen returns the prefix length of a contiguous IPv4 netmask.
func maskLen(m netip.Addr) (int, bool) {
	b := m.As4()
	v := binary.BigEndian.Uint32(b[:])
	n := bits.LeadingZeros32(^v)
	return n, v<<n == 0
}

// formatRoute renders a route the way ocserv does: IPv4 as
// ADDR/DOTTED-MASK, IPv6 as ADDR/LEN.
func formatRoute(p netip.Prefix) string {
	p = p.Masked()
	if !p.Addr().Is4() {
		return p.String()
	}
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-p.Bits()))
	return p.Addr().String() + "/" + netip.AddrFrom4(m).String()
}

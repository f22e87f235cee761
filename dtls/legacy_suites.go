package dtls

import (
	"encoding/hex"
	"errors"
	"strings"

	"kvpn/dtls/recordlayer"
)

// The legacy AnyConnect DTLS mode (Cisco's, older than PSK-NEGOTIATE): the
// client sends a random 48-byte X-DTLS-Master-Secret and its suite lists in
// the CONNECT request, the server answers an X-DTLS-Session-ID and one
// suite, and the client's DTLS ClientHello "resumes" that session with that
// master secret, a session that never had a full handshake. legacy.go runs
// the server's side of that abbreviated handshake.

// LegacySuite is one suite of the legacy mode, as the CONNECT headers
// name it.
type LegacySuite struct {
	Name     string            // as in the header, e.g. "OC-DTLS1_2-AES128-GCM"
	DTLS12   bool              // listed in (and answered with) X-DTLS12-CipherSuite
	Version  uint16            // recordlayer.VersionDTLS12 or recordlayer.VersionDTLS09
	Suite    recordlayer.Suite // the TLS suite ID in the hellos
	priority int
}

// legacySuites are the names vpnd accepts, with ocserv's priorities: the
// highest offered wins. DTLS 0.9 (Cisco's pre-RFC DTLS, version 0x0100)
// has only the CBC suites, the OC-DTLS1_2 names are openconnect's for DTLS
// 1.2, and the X-DTLS12-CipherSuite names are OpenSSL's, as Cisco's own
// clients send them.
var legacySuites = []LegacySuite{
	{"OC-DTLS1_2-AES256-GCM", false, recordlayer.VersionDTLS12, recordlayer.TLS_RSA_WITH_AES_256_GCM_SHA384, 90},
	{"OC-DTLS1_2-AES128-GCM", false, recordlayer.VersionDTLS12, recordlayer.TLS_RSA_WITH_AES_128_GCM_SHA256, 80},
	{"AES256-SHA", false, recordlayer.VersionDTLS09, recordlayer.TLS_RSA_WITH_AES_256_CBC_SHA, 60},
	{"AES128-SHA", false, recordlayer.VersionDTLS09, recordlayer.TLS_RSA_WITH_AES_128_CBC_SHA, 50},
	{"AES256-GCM-SHA384", true, recordlayer.VersionDTLS12, recordlayer.TLS_RSA_WITH_AES_256_GCM_SHA384, 90},
	{"AES128-GCM-SHA256", true, recordlayer.VersionDTLS12, recordlayer.TLS_RSA_WITH_AES_128_GCM_SHA256, 50},
}

// Header is the CONNECT answer header that names the suite.
func (s LegacySuite) Header() string {
	if s.DTLS12 {
		return "X-DTLS12-CipherSuite"
	}
	return "X-DTLS-CipherSuite"
}

// VersionName is the DTLS version for logs.
func (s LegacySuite) VersionName() string {
	if s.Version == recordlayer.VersionDTLS09 {
		return "DTLS0.9"
	}
	return "DTLS1.2"
}

// ChooseLegacySuite picks the suite of the legacy mode from the client's
// X-DTLS-CipherSuite and X-DTLS12-CipherSuite lists (colon-separated),
// highest priority first, as ocserv does; on a tie the X-DTLS-CipherSuite
// one. unknown counts the names it did not know (PSK-NEGOTIATE and the
// suites it deliberately skips, such as DES-CBC3-SHA or ECDHE-..., count
// too: none of them can be resumed here).
func ChooseLegacySuite(dtlsList, dtls12List string) (best LegacySuite, ok bool, unknown int) {
	consider := func(list string, dtls12 bool) {
		for _, name := range strings.Split(list, ":") {
			name = strings.TrimSpace(name)
			if name == "" || name == "PSK-NEGOTIATE" {
				continue
			}
			found := false
			for _, s := range legacySuites {
				if s.DTLS12 == dtls12 && s.Name == name {
					found = true
					if !ok || s.priority > best.priority {
						best, ok = s, true
					}
				}
			}
			if !found {
				unknown++
			}
		}
	}
	consider(dtlsList, false)
	consider(dtls12List, true)
	return best, ok, unknown
}

// MasterSecretLen is the length of X-DTLS-Master-Secret: a TLS master
// secret (RFC 5246 section 8.1), sent as 96 hex digits.
const MasterSecretLen = 48

// ErrMasterSecret: the X-DTLS-Master-Secret header is missing, not hex, or
// not 48 bytes.
var ErrMasterSecret = errors.New("dtls: X-DTLS-Master-Secret is not 96 hex digits")

// ParseMasterSecret decodes X-DTLS-Master-Secret.
func ParseMasterSecret(h string) ([]byte, error) {
	h = strings.TrimSpace(h)
	if len(h) != 2*MasterSecretLen {
		return nil, ErrMasterSecret
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, ErrMasterSecret
	}
	return b, nil
}

// Legacy is what the server keeps of a session's legacy DTLS offer.
type Legacy struct {
	Suite        LegacySuite
	MasterSecret []byte   // the client's X-DTLS-Master-Secret
	SessionID    [32]byte // our X-DTLS-Session-ID
}

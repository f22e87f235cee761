package ktlsbridge

import (
	"testing"

	"kvpn/record"
	"kvpn/record/sealtest"
)

var (
	_ record.Sealer = (*Sealer)(nil)
	_ record.Opener = (*Opener)(nil)
)

// TestEngineContract runs the record engines' common contract
// (record/sealtest) over every TLS version and cipher the userspace engine
// takes over from crypto/tls.
func TestEngineContract(t *testing.T) {
	for _, kind := range ktKinds {
		t.Run(kind.String(), func(t *testing.T) {
			sealtest.Run(t, func(tb testing.TB) (record.Sealer, record.Opener) {
				return ktSealerOpener(tb, ktTestKeys(kind, 9, 0))
			})
		})
	}
}

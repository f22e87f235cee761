package recordlayer

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
// (record/sealtest) over every DTLS suite kvpn seals, with and without
// connection IDs (RFC 9146), and the legacy AES-CBC-SHA suites.
func TestEngineContract(t *testing.T) {
	type newPair func(testing.TB, Suite, uint64) (*Sealer, *Opener)
	run := func(t *testing.T, s Suite, mk newPair) {
		sealtest.Run(t, func(tb testing.TB) (record.Sealer, record.Opener) {
			return mk(tb, s, 1)
		})
	}
	for _, s := range testSuites {
		t.Run(s.String(), func(t *testing.T) { run(t, s, pair) })
		t.Run(s.String()+"/cid", func(t *testing.T) { run(t, s, pairCID) })
	}
	cbc := func(v uint16) newPair {
		return func(tb testing.TB, s Suite, start uint64) (*Sealer, *Opener) {
			a, b := cbcKeys(s, v)
			return pairOf(tb, a, b, start)
		}
	}
	for _, s := range cbcSuites {
		t.Run(s.String()+"/dtls0.9", func(t *testing.T) { run(t, s, cbc(VersionDTLS09)) })
		t.Run(s.String()+"/dtls1.2", func(t *testing.T) { run(t, s, cbc(VersionDTLS12)) })
	}
}

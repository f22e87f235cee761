package recordlayer

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
)

// SeqGap is how far above pion's last sequence number our own records
// start (NewSealer(k, k.LocalSeq+SeqGap)). After the takeover pion's Conn is
// kept alive to answer a retransmitted final flight (RFC 6347 section
// 4.2.4), and each retransmission takes the next number from pion's own
// counter of the same epoch, with the same key: the gap keeps the two
// counters, and therefore the GCM nonces, apart. A million records is far
// more than any handshake retransmits.
const SeqGap = 1 << 20

// Keys is the key material of one DTLS 1.2 association, from our side.
type Keys struct {
	Suite Suite
	// Epoch of the application data: 1 after a first handshake (pion does
	// not renegotiate).
	Epoch uint16
	// LocalKey and LocalIV protect what we send, RemoteKey and RemoteIV what
	// we receive. The IV is the 4-byte implicit salt for GCM (RFC 5288) and
	// the 12-byte write IV for ChaCha20-Poly1305 (RFC 7905).
	LocalKey, LocalIV   []byte
	RemoteKey, RemoteIV []byte
	// LocalMACKey and RemoteMACKey are the HMAC keys of a CBC suite (empty
	// for AEAD suites).
	LocalMACKey, RemoteMACKey []byte
	// Version is the record version: 0 or VersionDTLS12, or for a CBC
	// suite VersionDTLS09 (Cisco's pre-RFC DTLS) or VersionDTLS10.
	Version uint16
	// LocalSeq is the next sequence number pion would use in Epoch (it has
	// used 0..LocalSeq-1). RemoteSeq is one above the highest sequence
	// number pion accepted from the peer in Epoch (0 if none); NewOpener
	// rejects everything below it, as pion already consumed those records.
	LocalSeq, RemoteSeq uint64
	// Connection IDs (RFC 9146), empty if none was negotiated in that
	// direction. LocalCID is the one the peer asked for: it goes into every
	// record we send (pion's RemoteConnectionID). RemoteCID is the one we
	// asked for: the peer puts it into every record it sends us, and a
	// server finds the peer by it (pion's LocalConnectionID). With a
	// LocalCID the Sealer writes tls12_cid records; with a RemoteCID the
	// Opener accepts only tls12_cid records that carry it.
	LocalCID, RemoteCID []byte
}

// SealerStart is the first sequence number our Sealer should use:
// LocalSeq+SeqGap (see SeqGap).
func (k Keys) SealerStart() uint64 { return k.LocalSeq + SeqGap }

// pionState mirrors the fields we need of pion/dtls v3's unexported
// serializedState (state.go), which State.MarshalBinary encodes with gob.
// gob matches fields by name and skips the ones we leave out
// (SRTPProtectionProfile, PeerCertificates, IdentityHint, ...).
type pionState struct {
	RemoteSequenceNumber uint64
	HandshakeComplete    bool
	LocalEpoch           uint16
	RemoteEpoch          uint16
	LocalRandom          [32]byte
	RemoteRandom         [32]byte
	CipherSuiteID        uint16
	MasterSecret         []byte
	SequenceNumber       uint64
	LocalConnectionID    []byte
	RemoteConnectionID   []byte
	IsClient             bool
}

// KeysFromPion derives Keys from the output of pion/dtls v3's
// State.MarshalBinary (taken after the handshake completed). It runs the
// TLS 1.2 key expansion (RFC 5246 section 6.3) on the master secret and
// both randoms with pion's prf.GenerateEncryptionKeys: the client writes
// with the client keys, the server with the server keys.
//
// Connection IDs: pion's state names them from its own side.
// LocalConnectionID is the one pion generated and sent in its hello, which
// the peer must put into the records it sends (pion checks incoming
// tls12_cid records against it): our RemoteCID. RemoteConnectionID is the
// one the peer sent, which pion puts into every record it writes once
// non-empty (Conn.Write, alerts, the Finished): our LocalCID.
func KeysFromPion(state []byte) (Keys, error) {
	var st pionState
	if err := gob.NewDecoder(bytes.NewReader(state)).Decode(&st); err != nil {
		return Keys{}, fmt.Errorf("record: decoding pion state: %w", err)
	}
	if !st.HandshakeComplete {
		return Keys{}, errors.New("record: pion state: handshake not complete")
	}
	suite := Suite(st.CipherSuiteID)
	p, ok := suite.params()
	if !ok {
		return Keys{}, fmt.Errorf("%w: %v", ErrSuite, suite)
	}
	if st.LocalEpoch == 0 || st.LocalEpoch != st.RemoteEpoch {
		// Epoch 0 has no keys; differing epochs would mean a handshake
		// still in flight.
		return Keys{}, fmt.Errorf("record: pion state: epochs local %d remote %d, want equal and > 0",
			st.LocalEpoch, st.RemoteEpoch)
	}
	if len(st.LocalConnectionID) > MaxCIDLen || len(st.RemoteConnectionID) > MaxCIDLen {
		return Keys{}, errors.New("record: pion state: connection ID longer than 255 bytes")
	}
	if len(st.MasterSecret) != 48 {
		return Keys{}, fmt.Errorf("record: pion state: master secret of %d bytes, want 48", len(st.MasterSecret))
	}
	if st.SequenceNumber > MaxSeq || st.RemoteSequenceNumber > MaxSeq+1 {
		return Keys{}, errors.New("record: pion state: sequence numbers out of range")
	}

	clientRandom, serverRandom := st.LocalRandom[:], st.RemoteRandom[:]
	if !st.IsClient {
		clientRandom, serverRandom = serverRandom, clientRandom
	}
	ek, err := prf.GenerateEncryptionKeys(st.MasterSecret, clientRandom, serverRandom,
		0, p.keyLen, p.ivLen, p.prf) // AEAD suites have no MAC key
	if err != nil {
		return Keys{}, fmt.Errorf("record: key expansion: %w", err)
	}
	k := Keys{
		Suite:     suite,
		Epoch:     st.LocalEpoch,
		LocalSeq:  st.SequenceNumber,
		RemoteSeq: st.RemoteSequenceNumber,
	}
	if len(st.RemoteConnectionID) > 0 {
		k.LocalCID = st.RemoteConnectionID
	}
	if len(st.LocalConnectionID) > 0 {
		k.RemoteCID = st.LocalConnectionID
	}
	if st.IsClient {
		k.LocalKey, k.LocalIV = ek.ClientWriteKey, ek.ClientWriteIV
		k.RemoteKey, k.RemoteIV = ek.ServerWriteKey, ek.ServerWriteIV
	} else {
		k.LocalKey, k.LocalIV = ek.ServerWriteKey, ek.ServerWriteIV
		k.RemoteKey, k.RemoteIV = ek.ClientWriteKey, ek.ClientWriteIV
	}
	return k, nil
}

// KeysFromConn is KeysFromPion on c's current state. Call it once c's
// handshake has completed, and stop routing application data to c from then
// on: c keeps its read loop and its sequence counter, and from then on must
// only see and send handshake retransmissions.
func KeysFromConn(c *dtls.Conn) (Keys, error) {
	st, ok := c.ConnectionState()
	if !ok {
		return Keys{}, errors.New("record: pion connection has no cipher suite yet")
	}
	b, err := st.MarshalBinary()
	if err != nil {
		return Keys{}, fmt.Errorf("record: exporting pion state: %w", err)
	}
	return KeysFromPion(b)
}

// check validates the key and IV sizes and the connection ID of one
// direction.
func (k Keys) check(p suiteParams, key, iv, mac, cid []byte) error {
	switch {
	case k.Version != 0 && k.Version != VersionDTLS12 && !p.cbc:
		return fmt.Errorf("record: %v only with DTLS 1.2, not version %#04x", k.Suite, k.Version)
	case k.Version != 0 && k.Version != VersionDTLS12 && k.Version != VersionDTLS10 && k.Version != VersionDTLS09:
		return fmt.Errorf("record: unknown record version %#04x", k.Version)
	case p.cbc && len(cid) > 0:
		return errors.New("record: connection IDs only with AEAD suites")
	case p.cbc && len(mac) != macLen:
		return fmt.Errorf("record: %v needs a %d-byte MAC key, have %d", k.Suite, macLen, len(mac))
	}
	if len(cid) > MaxCIDLen {
		return fmt.Errorf("record: connection ID of %d bytes, at most %d", len(cid), MaxCIDLen)
	}
	if len(key) != p.keyLen || len(iv) != p.ivLen {
		return fmt.Errorf("record: %v needs a %d-byte key and %d-byte IV, have %d and %d",
			k.Suite, p.keyLen, p.ivLen, len(key), len(iv))
	}
	if k.Epoch == 0 {
		return errors.New("record: epoch 0 is unprotected")
	}
	return nil
}

package dtls

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"kvpn/dtls/recordlayer"
)

// The server's side of the legacy mode's abbreviated handshake (RFC 5246
// section 7.3, figure 2, as DTLS runs it, RFC 6347 section 4.2.4, figure
// 2; Cisco's DTLS 0.9 as GnuTLS implements it):
//
//	client                                  server
//	ClientHello (session_id = Session-ID) -->
//	                                 <-- ServerHello (same session_id)
//	                                     ChangeCipherSpec
//	                                     Finished (epoch 1)
//	ChangeCipherSpec
//	Finished (epoch 1)                  -->
//
// The master secret is the client's X-DTLS-Master-Secret; there is no key
// exchange, no certificate, no extension but an echoed renegotiation_info
// (RFC 5746 section 3.6). No HelloVerifyRequest either, as ocserv: the
// session_id (random, handed out on the authenticated TLS channel) routed
// the ClientHello here, and the handshake costs a few hashes.
//
// DTLS 0.9 differs from DTLS 1.2 here in four ways: the version 0x0100,
// TLS 1.0's PRF (RFC 2246 section 5) and its MD5+SHA-1 Finished hash (RFC
// 2246 section 7.4.9), the handshake hash over message bodies without
// their DTLS headers, and a ChangeCipherSpec message of three bytes that
// carries, and uses up, a handshake message_seq.

// Handshake message types (RFC 5246 section 7.4).
const (
	hsClientHello = 1
	hsServerHello = 2
	hsFinished    = 20
)

const (
	hsHeaderLen     = 12 // DTLS handshake header, RFC 6347 section 4.2.2
	randomLen       = 32
	verifyDataLen   = 12 // RFC 5246 section 7.4.9
	extRenegotiate  = 0xff01
	scsvRenegotiate = 0x00ff // TLS_EMPTY_RENEGOTIATION_INFO_SCSV
)

// legacyHandshakeTimeout bounds a legacy handshake; a variable for tests.
var legacyHandshakeTimeout = handshakeTimeout

// legacyRetransmit is the first retransmission timeout of the server's
// flight (RFC 6347 section 4.2.4.1: 1 s, doubled each time).
var legacyRetransmit = time.Second

var (
	errHelloMalformed = errors.New("dtls: malformed ClientHello")
	errHelloSession   = errors.New("dtls: ClientHello does not resume the offered session")
	errHelloSuite     = errors.New("dtls: ClientHello lacks the offered cipher suite, version or null compression")
	errFinished       = errors.New("dtls: client Finished does not verify (wrong master secret?)")
)

// legacyState is one legacy handshake's transcript and keys.
type legacyState struct {
	lg          Legacy
	hello       legacyHello
	transcript  []byte // the handshake messages hashed for Finished
	keys        recordlayer.Keys
	flight      []byte // our ServerHello, ChangeCipherSpec, Finished
	finishedSeq uint64 // the client Finished's record number
}

// addTranscript adds a handshake message to the Finished hash: whole, as
// one unfragmented DTLS message (RFC 6347 section 4.2.6), or for DTLS 0.9
// without its 12-byte DTLS header, as GnuTLS and OpenSSL's DTLS1_BAD_VER
// hash it.
func (st *legacyState) addTranscript(msg []byte) {
	if st.lg.Suite.Version == recordlayer.VersionDTLS09 {
		msg = msg[hsHeaderLen:]
	}
	st.transcript = append(st.transcript, msg...)
}

// verifyData is the Finished content for label over the transcript so far
// (RFC 5246 section 7.4.9; RFC 2246 section 7.4.9: MD5 || SHA-1).
func (st *legacyState) verifyData(label string) []byte {
	v, s := st.lg.Suite.Version, st.lg.Suite.Suite
	var sum []byte
	if v == recordlayer.VersionDTLS09 {
		m, h := md5.Sum(st.transcript), sha1.Sum(st.transcript)
		sum = append(m[:], h[:]...)
	} else {
		h := s.PRFHash()()
		h.Write(st.transcript)
		sum = h.Sum(nil)
	}
	return prf(v, s, st.lg.MasterSecret, label, sum, verifyDataLen)
}

// legacyKeys runs the key expansion (RFC 5246 section 6.3): key_block =
// PRF(master_secret, "key expansion", server_random + client_random), cut
// into client and server MAC keys (CBC), keys, and fixed IVs (GCM).
func legacyKeys(lg Legacy, clientRandom, serverRandom []byte) recordlayer.Keys {
	s := lg.Suite.Suite
	mac, key, iv := s.MACKeyLen(), s.KeyLen(), s.IVLen()
	kb := prf(lg.Suite.Version, s, lg.MasterSecret, "key expansion",
		append(append([]byte(nil), serverRandom...), clientRandom...), 2*(mac+key+iv))
	take := func(n int) []byte {
		b := kb[:n:n]
		kb = kb[n:]
		return b
	}
	cm, sm := take(mac), take(mac)
	ck, sk := take(key), take(key)
	ci, si := take(iv), take(iv)
	k := recordlayer.Keys{Suite: s, Epoch: 1, Version: lg.Suite.Version,
		LocalKey: sk, LocalIV: si, RemoteKey: ck, RemoteIV: ci}
	if mac > 0 {
		k.LocalMACKey, k.RemoteMACKey = sm, cm
	}
	return k
}

// answer checks a ClientHello against the offer and builds the server's
// flight (ServerHello, ChangeCipherSpec, Finished), in one datagram.
func (st *legacyState) answer(h legacyHello) error {
	lg := st.lg
	if subtle.ConstantTimeCompare(h.sessionID, lg.SessionID[:]) != 1 {
		return errHelloSession
	}
	if h.clientVer != lg.Suite.Version {
		return fmt.Errorf("%w: client version %#04x, offered %s", errHelloSuite, h.clientVer, lg.Suite.VersionName())
	}
	found := false
	for i := 0; i < len(h.suites); i += 2 {
		found = found || recordlayer.Suite(binary.BigEndian.Uint16(h.suites[i:])) == lg.Suite.Suite
	}
	null := false
	for _, c := range h.compressions {
		null = null || c == 0
	}
	if !found || !null {
		return errHelloSuite
	}
	st.hello = h
	st.transcript = st.transcript[:0]
	st.addTranscript(h.msg)

	// ServerHello (RFC 5246 section 7.4.1.3): server_version, random,
	// session_id (the client's: the session is resumed), cipher_suite,
	// compression_method null, and renegotiation_info if asked.
	sh := make([]byte, 0, 2+randomLen+1+32+3+9)
	sh = binary.BigEndian.AppendUint16(sh, lg.Suite.Version)
	random := make([]byte, randomLen)
	if _, err := rand.Read(random); err != nil {
		return err
	}
	sh = append(sh, random...)
	sh = append(sh, 32)
	sh = append(sh, lg.SessionID[:]...)
	sh = binary.BigEndian.AppendUint16(sh, uint16(lg.Suite.Suite))
	sh = append(sh, 0)
	if h.renegotiate {
		// extensions<5>: renegotiation_info with an empty
		// renegotiated_connection (RFC 5746 section 3.6).
		sh = append(sh, 0, 5, 0xff, 0x01, 0, 1, 0)
	}
	seq := uint16(0) // the first message of the server (RFC 6347 4.2.2)
	shMsg := hsMessage(hsServerHello, seq, sh)
	st.addTranscript(shMsg)
	st.keys = legacyKeys(lg, h.random, random)

	v := lg.Suite.Version
	flight := plainRecord(recordlayer.Handshake, v, 0, shMsg)
	ccs := []byte{1}
	if v == recordlayer.VersionDTLS09 {
		seq++
		ccs = []byte{1, byte(seq >> 8), byte(seq)}
	}
	flight = append(flight, plainRecord(recordlayer.ChangeCipherSpec, v, 1, ccs)...)
	seq++
	fin := hsMessage(hsFinished, seq, st.verifyData("server finished"))
	st.addTranscript(fin)
	sealer, err := recordlayer.NewSealer(st.keys, 0)
	if err != nil {
		return err
	}
	hr := sealer.Headroom()
	buf := make([]byte, hr+len(fin)+sealer.Tailroom())
	copy(buf[hr:], fin)
	rec, err := sealer.Seal(buf, hr, len(fin), recordlayer.Handshake)
	if err != nil {
		return err
	}
	st.flight = append(flight, rec...)
	st.keys.LocalSeq = 1 // our Finished was record 0 of epoch 1
	return nil
}

// checkFinished verifies the client's Finished (an opened epoch-1
// handshake record) against the transcript.
func (st *legacyState) checkFinished(pt []byte) error {
	if len(pt) != hsHeaderLen+verifyDataLen || pt[0] != hsFinished ||
		uint24(pt[1:4]) != verifyDataLen || uint24(pt[6:9]) != 0 || uint24(pt[9:12]) != verifyDataLen {
		return errFinished
	}
	want := st.verifyData("client finished")
	if subtle.ConstantTimeCompare(pt[hsHeaderLen:], want) != 1 {
		return errFinished
	}
	return nil
}

// packetConn is the part of feedConn the handshake uses.
type packetConn interface {
	ReadFrom([]byte) (int, net.Addr, error)
	WriteTo([]byte, net.Addr) (int, error)
	SetReadDeadline(time.Time) error
}

// legacyHandshake runs the server side over c (fed with the client's
// datagrams, the first ClientHello already queued) and returns the data
// channel's keys. Records that do not authenticate are dropped (RFC 6347
// section 4.1.2.7) and reported through bad; the handshake then fails when
// it times out, with the reason. A retransmitted ClientHello gets the
// flight again, and so does silence after it (RFC 6347 section 4.2.4).
func legacyHandshake(c packetConn, lg Legacy, bad func()) (recordlayer.Keys, error) {
	st := &legacyState{lg: lg}
	deadline := time.Now().Add(legacyHandshakeTimeout)
	rto := legacyRetransmit
	next := time.Time{}
	var opener *recordlayer.Opener
	var lastErr error
	buf := make([]byte, recvBufSize)
	send := func() {
		c.WriteTo(st.flight, nil)
		next = time.Now().Add(rto)
		rto = min(2*rto, 60*time.Second)
	}
	for {
		wait := deadline
		if !next.IsZero() && next.Before(wait) {
			wait = next
		}
		c.SetReadDeadline(wait)
		n, _, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Now().After(deadline) {
				if lastErr == nil {
					lastErr = errors.New("dtls: legacy handshake timed out")
				}
				return recordlayer.Keys{}, lastErr
			}
			if st.flight != nil {
				send()
			}
			continue
		}
		if err != nil {
			return recordlayer.Keys{}, err
		}
		dg := buf[:n]
		for len(dg) > 0 {
			rec, rest, err := recordlayer.NextRecord(dg)
			if err != nil {
				break
			}
			dg = rest
			epoch := binary.BigEndian.Uint16(rec[3:5])
			switch {
			case epoch == 0 && rec[0] == byte(recordlayer.Handshake):
				h, err := parseClientHello(rec[recordlayer.HeaderLen:])
				if err != nil {
					lastErr = err
					continue
				}
				if st.flight != nil && subtle.ConstantTimeCompare(h.random, st.hello.random) == 1 {
					send() // a retransmitted ClientHello: our flight was lost
					continue
				}
				// The first ClientHello, or the client started over.
				if err := st.answer(h); err != nil {
					// A ClientHello that does not fit the offer cannot
					// become one that does: fail now.
					return recordlayer.Keys{}, err
				}
				if opener, err = recordlayer.NewOpener(st.keys, 64); err != nil {
					return recordlayer.Keys{}, err
				}
				rto = legacyRetransmit
				send()
			case epoch == 0 && rec[0] == byte(recordlayer.ChangeCipherSpec):
				// Nothing to do: the Finished that follows proves it.
			case epoch == 1 && opener != nil:
				seq := uint64(binary.BigEndian.Uint64(rec[3:11]) & recordlayer.MaxSeq)
				ct, pt, err := opener.Open(rec)
				if err != nil {
					bad()
					lastErr = fmt.Errorf("%w: %v", errFinished, err)
					continue
				}
				if ct != recordlayer.Handshake {
					// Data that raced the Finished: the peer holds it
					// (holdEarly) only when it comes in a datagram of
					// its own; here it is dropped.
					continue
				}
				if err := st.checkFinished(pt); err != nil {
					return recordlayer.Keys{}, err
				}
				st.finishedSeq = seq
				k := st.keys
				k.RemoteSeq = seq + 1
				return k, nil
			}
		}
	}
}

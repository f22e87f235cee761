package dtls

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net"
	"os"
	"time"

	"kvpn/dtls/record"
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

// legacyHello is what the handshake needs of a ClientHello.
type legacyHello struct {
	random       []byte
	renegotiate  bool   // renegotiation_info or its SCSV offered
	msg          []byte // the whole message, DTLS header included
	messageSeq   uint16
	recordVer    uint16
	clientVer    uint16
	sessionID    []byte
	suites       []byte
	compressions []byte
}

// parseClientHello parses one unfragmented DTLS ClientHello message (RFC
// 6347 section 4.2.2 header, RFC 6347 section 4.2.1 and RFC 5246 section
// 7.4.1.2 body: client_version, random, session_id<0..32>,
// cookie<0..2^8-1>, cipher_suites<2..2^16-2>,
// compression_methods<1..2^8-1>, extensions<0..2^16-1> optional). msg
// starts at the handshake header; what follows the message is ignored.
func parseClientHello(msg []byte) (legacyHello, error) {
	var h legacyHello
	if len(msg) < hsHeaderLen || msg[0] != hsClientHello {
		return h, errHelloMalformed
	}
	length := int(uint24(msg[1:4]))
	h.messageSeq = binary.BigEndian.Uint16(msg[4:6])
	if uint24(msg[6:9]) != 0 || int(uint24(msg[9:12])) != length || hsHeaderLen+length > len(msg) {
		// Fragmented ClientHellos are not reassembled: this one has no
		// certificate or key share and fits any MTU.
		return h, errHelloMalformed
	}
	h.msg = msg[:hsHeaderLen+length]
	b := msg[hsHeaderLen : hsHeaderLen+length]
	if len(b) < 2+randomLen {
		return h, errHelloMalformed
	}
	h.clientVer = binary.BigEndian.Uint16(b)
	h.random = b[2 : 2+randomLen]
	b = b[2+randomLen:]
	var ok bool
	if h.sessionID, b, ok = vec8(b); !ok || len(h.sessionID) > 32 {
		return h, errHelloMalformed
	}
	if _, b, ok = vec8(b); !ok { // cookie
		return h, errHelloMalformed
	}
	if h.suites, b, ok = vec16(b); !ok || len(h.suites) < 2 || len(h.suites)%2 != 0 {
		return h, errHelloMalformed
	}
	if h.compressions, b, ok = vec8(b); !ok || len(h.compressions) < 1 {
		return h, errHelloMalformed
	}
	for i := 0; i < len(h.suites); i += 2 {
		if binary.BigEndian.Uint16(h.suites[i:]) == scsvRenegotiate {
			h.renegotiate = true
		}
	}
	if len(b) == 0 {
		return h, nil
	}
	exts, rest, ok := vec16(b)
	if !ok || len(rest) != 0 {
		return h, errHelloMalformed
	}
	for len(exts) > 0 {
		if len(exts) < 4 {
			return h, errHelloMalformed
		}
		typ := binary.BigEndian.Uint16(exts)
		var data []byte
		if data, exts, ok = vec16(exts[2:]); !ok {
			return h, errHelloMalformed
		}
		if typ == extRenegotiate {
			h.renegotiate = true
			_ = data
		}
	}
	return h, nil
}

func vec8(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, false
	}
	return b[1 : 1+int(b[0])], b[1+int(b[0]):], true
}

func vec16(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, false
	}
	return b[2 : 2+n], b[2+n:], true
}

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

func putUint24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

// hsMessage frames a handshake body as one unfragmented DTLS message.
func hsMessage(typ byte, seq uint16, body []byte) []byte {
	m := make([]byte, hsHeaderLen+len(body))
	m[0] = typ
	putUint24(m[1:4], len(body))
	binary.BigEndian.PutUint16(m[4:6], seq)
	putUint24(m[9:12], len(body))
	copy(m[hsHeaderLen:], body)
	return m
}

// plainRecord frames an epoch-0 record.
func plainRecord(ct record.ContentType, version uint16, seq uint64, body []byte) []byte {
	r := make([]byte, record.HeaderLen+len(body))
	r[0] = byte(ct)
	binary.BigEndian.PutUint16(r[1:3], version)
	binary.BigEndian.PutUint64(r[3:11], seq) // epoch 0, 48-bit seq
	binary.BigEndian.PutUint16(r[11:13], uint16(len(body)))
	copy(r[record.HeaderLen:], body)
	return r
}

// pHash is P_hash of RFC 5246 section 5 (and RFC 2246 section 5).
func pHash(h func() hash.Hash, secret, seed []byte, n int) []byte {
	out := make([]byte, 0, n+64)
	m := hmac.New(h, secret)
	m.Write(seed)
	a := m.Sum(nil) // A(1)
	for len(out) < n {
		m.Reset()
		m.Write(a)
		m.Write(seed)
		out = m.Sum(out)
		m.Reset()
		m.Write(a)
		a = m.Sum(a[:0])
	}
	return out[:n]
}

// prf is the PRF of the channel's version: TLS 1.2's P_hash with the
// suite's hash (RFC 5246 section 5), or for DTLS 0.9 TLS 1.0's P_MD5 of
// the secret's first half XOR P_SHA-1 of its second (RFC 2246 section 5).
func prf(version uint16, suite record.Suite, secret []byte, label string, seed []byte, n int) []byte {
	ls := append([]byte(label), seed...)
	if version != record.VersionDTLS09 {
		return pHash(suite.PRFHash(), secret, ls, n)
	}
	half := (len(secret) + 1) / 2
	out := pHash(md5.New, secret[:half], ls, n)
	s := pHash(sha1.New, secret[len(secret)-half:], ls, n)
	for i := range out {
		out[i] ^= s[i]
	}
	return out
}

// legacyState is one legacy handshake's transcript and keys.
type legacyState struct {
	lg          Legacy
	hello       legacyHello
	transcript  []byte // the handshake messages hashed for Finished
	keys        record.Keys
	flight      []byte // our ServerHello, ChangeCipherSpec, Finished
	finishedSeq uint64 // the client Finished's record number
}

// addTranscript adds a handshake message to the Finished hash: whole, as
// one unfragmented DTLS message (RFC 6347 section 4.2.6), or for DTLS 0.9
// without its 12-byte DTLS header, as GnuTLS and OpenSSL's DTLS1_BAD_VER
// hash it.
func (st *legacyState) addTranscript(msg []byte) {
	if st.lg.Suite.Version == record.VersionDTLS09 {
		msg = msg[hsHeaderLen:]
	}
	st.transcript = append(st.transcript, msg...)
}

// verifyData is the Finished content for label over the transcript so far
// (RFC 5246 section 7.4.9; RFC 2246 section 7.4.9: MD5 || SHA-1).
func (st *legacyState) verifyData(label string) []byte {
	v, s := st.lg.Suite.Version, st.lg.Suite.Suite
	var sum []byte
	if v == record.VersionDTLS09 {
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
func legacyKeys(lg Legacy, clientRandom, serverRandom []byte) record.Keys {
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
	k := record.Keys{Suite: s, Epoch: 1, Version: lg.Suite.Version,
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
		found = found || record.Suite(binary.BigEndian.Uint16(h.suites[i:])) == lg.Suite.Suite
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
	flight := plainRecord(record.Handshake, v, 0, shMsg)
	ccs := []byte{1}
	if v == record.VersionDTLS09 {
		seq++
		ccs = []byte{1, byte(seq >> 8), byte(seq)}
	}
	flight = append(flight, plainRecord(record.ChangeCipherSpec, v, 1, ccs)...)
	seq++
	fin := hsMessage(hsFinished, seq, st.verifyData("server finished"))
	st.addTranscript(fin)
	sealer, err := record.NewSealer(st.keys, 0)
	if err != nil {
		return err
	}
	hr := sealer.Headroom()
	buf := make([]byte, hr+len(fin)+sealer.Tailroom())
	copy(buf[hr:], fin)
	rec, err := sealer.Seal(buf, hr, len(fin), record.Handshake)
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
func legacyHandshake(c packetConn, lg Legacy, bad func()) (record.Keys, error) {
	st := &legacyState{lg: lg}
	deadline := time.Now().Add(legacyHandshakeTimeout)
	rto := legacyRetransmit
	next := time.Time{}
	var opener *record.Opener
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
				return record.Keys{}, lastErr
			}
			if st.flight != nil {
				send()
			}
			continue
		}
		if err != nil {
			return record.Keys{}, err
		}
		dg := buf[:n]
		for len(dg) > 0 {
			rec, rest, err := record.NextRecord(dg)
			if err != nil {
				break
			}
			dg = rest
			epoch := binary.BigEndian.Uint16(rec[3:5])
			switch {
			case epoch == 0 && rec[0] == byte(record.Handshake):
				h, err := parseClientHello(rec[record.HeaderLen:])
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
					return record.Keys{}, err
				}
				if opener, err = record.NewOpener(st.keys, 64); err != nil {
					return record.Keys{}, err
				}
				rto = legacyRetransmit
				send()
			case epoch == 0 && rec[0] == byte(record.ChangeCipherSpec):
				// Nothing to do: the Finished that follows proves it.
			case epoch == 1 && opener != nil:
				seq := uint64(binary.BigEndian.Uint64(rec[3:11]) & record.MaxSeq)
				ct, pt, err := opener.Open(rec)
				if err != nil {
					bad()
					lastErr = fmt.Errorf("%w: %v", errFinished, err)
					continue
				}
				if ct != record.Handshake {
					// Data that raced the Finished: the peer holds it
					// (holdEarly) only when it comes in a datagram of
					// its own; here it is dropped.
					continue
				}
				if err := st.checkFinished(pt); err != nil {
					return record.Keys{}, err
				}
				st.finishedSeq = seq
				k := st.keys
				k.RemoteSeq = seq + 1
				return k, nil
			}
		}
	}
}

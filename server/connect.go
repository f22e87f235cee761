package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"kvpn/dtls/recordlayer"

	"kvpn/cstp"
	"kvpn/ctl"
	"kvpn/dtls"
	"kvpn/record"
	"kvpn/session"
	"kvpn/tun"
)

// CONNECT: the tunnel's parameters for the session (address, MTU, routes,
// DNS, extensions), the DTLS offer, and the tunnel from then on.

// handleConnect turns the connection into a tunnel for the session the
// cookie names, and runs it until the connection ends.
func (s *Server) handleConnect(ctx context.Context, conn record.Conn, br *bufio.Reader, req *http.Request, log *slog.Logger, loggedIn func()) {
	creq, err := cstp.ParseConnectRequest(req)
	if err != nil {
		s.badRequest(conn, log)
		log.Info("closing connection: bad CONNECT", "err", err)
		writeResponse(conn, http.StatusBadRequest, "", nil, nil)
		conn.Close()
		return
	}
	certUser, leaf := s.certUserOf(conn)
	sess, prev, prev6, err := s.sessionFor(creq, remoteAddr(conn), certUser, log)
	if errors.Is(err, errMaxClients) || errors.Is(err, errMaxSameClients) {
		// A session resumed from a cookie counts against the limits too.
		s.Counters.SessionLimit.Add(1)
		if ok, n := s.logSessionLimit.allow(); ok {
			log.Warn("CONNECT refused: session limit", "err", err, "not-logged", n)
		}
		writeResponse(conn, http.StatusServiceUnavailable, "", nil, nil)
		conn.Close()
		return
	}
	if err != nil {
		log.Warn("CONNECT refused: bad cookie", "err", err)
		writeResponse(conn, http.StatusUnauthorized, "", nil, nil)
		conn.Close()
		return
	}
	log = log.With("user", sess.user, "session", sess.id)
	s.loggedIn(ctx)
	if leaf != nil {
		// The certificate this connection presented (a resumed session's
		// too), for a reloaded CRL to check.
		sess.mu.Lock()
		sess.certLeaf = leaf
		sess.mu.Unlock()
	}
	ch, err := session.NewCSTPChannel(conn, br, s.cfg.MTU)
	if err != nil {
		log.Error("creating channel", "err", err)
		conn.Close()
		return
	}
	addr, err := sess.attach(ch, prev, prev6)
	if err != nil {
		log.Warn("CONNECT refused", "err", err)
		writeResponse(conn, http.StatusServiceUnavailable, "", nil, nil)
		conn.Close()
		return
	}
	if !s.tunnelUp(sess, remoteAddr(conn), log) {
		// connect-script refused the session (scripts.go): it has ended.
		writeResponse(conn, http.StatusServiceUnavailable, "", nil, nil)
		conn.Close()
		return
	}
	set := s.currentSettings()
	mtu := tunnelMTU(s.cfg.MTU, linkBase(creq.BaseMTU, remoteAddr(conn)))
	addr6 := sess.ipv6()
	if addr6.IsValid() && mtu < minIPv6MTU {
		// As ocserv: a link this small cannot carry IPv6.
		log.Info("no IPv6 for this connection: tunnel MTU below IPv6's minimum", "mtu", mtu)
		addr6 = netip.Addr{}
	}
	params := &cstp.TunnelParams{
		Address:       addr,
		MTU:           mtu,
		Netmask:       s.pool.netmask(),
		SplitInclude:  s.splitInclude(sess.pol.Load().routes, addr6),
		SplitExclude:  sess.pol.Load().excludes,
		DNS:           pushedDNS(sess.pol.Load(), set.DNS),
		DefaultDomain: set.DefaultDomain,
		BaseMTU:       1500,
		DPD:           s.cfg.DPD,
		Keepalive:     s.cfg.Keepalive,
		RekeyMethod:   "none",
	}
	if addr6.IsValid() {
		params.AddressIP6 = netip.PrefixFrom(addr6, 128)
	}
	// The connection's context exists before the DTLS offer leaves: the
	// client starts its handshake as soon as it reads the answer, and the
	// DTLS peer it brings up lives as long as this connection.
	cctx, cancelConn := context.WithCancel(ctx)
	defer cancelConn()
	sess.setConnContext(cctx)
	switch {
	case s.dtls == nil:
	case offersPSKNegotiate(creq.DTLSCipherSuite) || offersPSKNegotiate(creq.DTLS12CipherSuite):
		// PSK whenever offered, as ocserv.
		kvpn := cstp.IsKvpnAgent(req.UserAgent())
		chacha := kvpn && creq.Extra.Get(cstp.HeaderDTLSCipher) == cstp.ExtDTLSChaCha
		cid := kvpn && creq.Extra.Get(cstp.HeaderDTLSCID) == "1"
		if err := s.offerDTLS(sess, conn, params, chacha, cid); err != nil {
			log.Warn("DTLS not offered", "err", err)
		}
	case creq.DTLSCipherSuite != "" || creq.DTLS12CipherSuite != "" || creq.DTLSMasterSecret != "":
		if err := s.offerLegacyDTLS(sess, creq, params, log); err != nil {
			log.Warn("legacy DTLS not offered; the tunnel stays on TLS", "err", err)
		}
	}
	coalesce := cstp.IsKvpnAgent(req.UserAgent()) && creq.Extra.Get(cstp.HeaderCoalesce) == "1"
	if coalesce {
		if params.Extra == nil {
			params.Extra = http.Header{}
		}
		params.Extra.Set(cstp.HeaderCoalesce, "1")
	}
	var gso tun.VirtioDevice
	if cstp.IsKvpnAgent(req.UserAgent()) && creq.Extra.Get(cstp.HeaderGSO) == "1" {
		if gso = s.gsoWriter(); gso != nil {
			if params.Extra == nil {
				params.Extra = http.Header{}
			}
			params.Extra.Set(cstp.HeaderGSO, "1")
			ch.AcceptGSO(sess.deliverGSO(gso, params.MTU))
		}
	}
	if cstp.IsKvpnAgent(req.UserAgent()) && creq.Extra.Get(cstp.HeaderGSODown) == "1" && s.gsoWriter() != nil {
		if params.Extra == nil {
			params.Extra = http.Header{}
		}
		params.Extra.Set(cstp.HeaderGSODown, "1")
		ch.SetPeerGSO()
		sess.gsoDown.Store(int32(params.MTU))
	}
	if cstp.IsKvpnAgent(req.UserAgent()) {
		// A fresh cookie that names the address just assigned, and how
		// often to renew it: vpnc can then resume on any node.
		if ticket, err := s.sealTicket(sess); err == nil {
			if params.Extra == nil {
				params.Extra = http.Header{}
			}
			params.Extra.Set("Set-Cookie", "webvpn="+ticket+"; Secure")
			params.Extra.Set(cstp.HeaderCookieRefresh, strconv.Itoa(int(s.refreshInterval()/time.Second)))
		} else {
			log.Warn("sealing cookie", "err", err)
		}
	}
	var hdr bytes.Buffer
	params.WriteResponse(&hdr)
	if _, err := conn.Write(hdr.Bytes()); err != nil {
		log.Info("writing CONNECT answer", "err", err)
		sess.detach(ch, err)
		conn.Close()
		return
	}
	if coalesce {
		conn.SetCoalesce(true)
	}
	// The tunnel has its own liveness checks from here on: DPD for the
	// reading side, and a write timeout for the writing side, so a client
	// that stops reading (its TCP window closed) cannot hold its session
	// and address for ever (TCP itself retries a zero window without end,
	// RFC 9293 3.8.6.1).
	conn.SetReadDeadline(time.Time{})
	conn.SetWriteDeadline(time.Time{})
	ch.SetWriteTimeout(s.tunnelWriteTimeout())
	log.Info("record layer", "engines", conn.Describe())
	up := []any{"address", addr.String(), "transport", ch.Name()}
	if addr6.IsValid() {
		up = append(up, "address6", addr6.String())
	}
	log.Info("tunnel up", up...)
	s.radiusTunnelUp(sess, addr) // RADIUS accounting Start (radius.go)
	s.connEvent(ctl.EventConnect, sess, conn.RemoteAddr().String(), ch.Name(), "")
	loggedIn()
	err = sess.run(cctx, ch, log)
	sess.detach(ch, err)
}

// offersPSKNegotiate reports whether the client's X-DTLS-CipherSuite lists
// PSK-NEGOTIATE, the only DTLS mode kvpn speaks.
func offersPSKNegotiate(suites string) bool {
	for _, s := range strings.Split(suites, ":") {
		if strings.TrimSpace(s) == "PSK-NEGOTIATE" {
			return true
		}
	}
	return false
}

// offerDTLS gives the session a fresh App-ID and the PSK exported from
// this TLS connection, and adds the X-DTLS headers to params.
func (s *Server) offerDTLS(sess *Session, conn record.Conn, params *cstp.TunnelParams, chacha, cid bool) error {
	psk, err := dtls.PSK(conn.ConnectionState())
	if err != nil {
		return err
	}
	var appID [dtls.AppIDLen]byte
	if _, err := rand.Read(appID[:]); err != nil {
		return err
	}
	sess.setDTLS(appID, psk, chacha, cid, nil)
	if chacha || cid {
		params.Extra = http.Header{}
	}
	if chacha {
		params.Extra.Set(cstp.HeaderDTLSCipher, cstp.ExtDTLSChaCha)
	}
	if cid {
		params.Extra.Set(cstp.HeaderDTLSCID, "1")
		// Connection-ID records are longer (the CID and the inner content
		// type): keep full-size packets within the link MTU.
		params.MTU -= dtls.CIDLen + 1
	}
	params.DTLSPort = s.dtlsPort()
	params.DTLSAppID = appID[:]
	params.DTLSCipherSuite = "PSK-NEGOTIATE"
	params.DTLSDPD = s.cfg.DPD
	params.DTLSKeepalive = s.cfg.Keepalive
	params.DTLSMTU = params.MTU
	return nil
}

// offerLegacyDTLS answers a client that wants the legacy AnyConnect DTLS
// (no PSK-NEGOTIATE in its lists): the session remembers the client's
// master secret and the chosen suite under a fresh X-DTLS-Session-ID,
// which the client's ClientHello resumes (dtls/legacy.go).
func (s *Server) offerLegacyDTLS(sess *Session, creq *cstp.ConnectRequest, params *cstp.TunnelParams, log *slog.Logger) error {
	ms, err := dtls.ParseMasterSecret(creq.DTLSMasterSecret)
	if err != nil {
		s.Counters.DTLSLegacyBadSecret.Add(1)
		return fmt.Errorf("%w (have %d characters)", err, len(creq.DTLSMasterSecret))
	}
	suite, ok, unknown := dtls.ChooseLegacySuite(creq.DTLSCipherSuite, creq.DTLS12CipherSuite)
	if !ok {
		s.Counters.DTLSLegacyNoSuite.Add(1)
		return fmt.Errorf("no suite vpnd can resume among X-DTLS-CipherSuite %q and X-DTLS12-CipherSuite %q",
			creq.DTLSCipherSuite, creq.DTLS12CipherSuite)
	}
	lg := &dtls.Legacy{Suite: suite, MasterSecret: ms}
	if _, err := rand.Read(lg.SessionID[:]); err != nil {
		return err
	}
	sess.setDTLS(lg.SessionID, nil, false, false, lg)
	if suite.Suite.CBC() {
		// A CBC record (IV, MAC, up to a block of padding) is longer than
		// a GCM one (explicit nonce, tag), which the MTU was sized for.
		params.MTU -= suite.Suite.Overhead() - recordlayer.TLS_RSA_WITH_AES_128_GCM_SHA256.Overhead()
	}
	params.DTLSPort = s.dtlsPort()
	params.DTLSSessionID = lg.SessionID[:]
	if suite.DTLS12 {
		params.DTLS12CipherSuite = suite.Name
	} else {
		params.DTLSCipherSuite = suite.Name
	}
	params.DTLSDPD = s.cfg.DPD
	params.DTLSKeepalive = s.cfg.Keepalive
	params.DTLSMTU = params.MTU
	log.Info("legacy DTLS offered", "suite", suite.Name, "version", suite.VersionName(), "unknown-suite-names", unknown)
	return nil
}

// tunnelMTU caps the configured MTU by what the client's link can carry
// (X-CSTP-Base-MTU), as ocserv does.
func tunnelMTU(configured, clientBase int) int {
	if clientBase > 0 && clientBase-dtlsOverhead < configured {
		return max(clientBase-dtlsOverhead, 576)
	}
	return configured
}

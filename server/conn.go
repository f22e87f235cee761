package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"kvpn/cstp"
	"kvpn/internal/contain"
	"kvpn/ktlsbridge"
	"kvpn/record"
	"kvpn/session"
)

// A client's TCP connection before the tunnel: the TLS handshake, then
// the HTTP requests (login, CONNECT) read from it in turn.

// handleConn serves one TCP connection: TLS handshake, login requests, and
// at most one CONNECT, after which the connection carries the tunnel.
func (s *Server) handleConn(ctx context.Context, raw net.Conn) {
	remote := raw.RemoteAddr().String()
	log := s.log.With("remote", remote)
	defer func() {
		// A bug in handling one connection must not take down the others.
		if v := recover(); v != nil {
			contain.Recovered(log, "connection", v, &s.Counters.PanicsConn)
			raw.Close()
		}
	}()
	from := addrOf(raw.RemoteAddr())
	// Refused before any work: a banned address, and connections beyond
	// the bounds on those not logged in yet.
	if banned, _ := s.bans.Banned(from); banned {
		s.Counters.LoginBanned.Add(1)
		if ok, n := s.logBanned.allow(); ok {
			log.Warn("connection refused: address banned (max-ban-score)", "not-logged", n)
		}
		raw.Close()
		return
	}
	lc, evicted, ok := s.loginConns.acquire(from, s.cfg.MaxLoginConnections, s.cfg.MaxLoginConnectionsPerIP, func() { raw.Close() })
	if evicted > 0 {
		s.Counters.LoginConnEvicted.Add(uint64(evicted))
		if ok, n := s.logConnEvicted.allow(); ok {
			log.Warn("closed the oldest connection still in its TLS handshake: too many connections not logged in",
				"max-login-connections", s.cfg.MaxLoginConnections,
				"max-login-connections-per-ip", s.cfg.MaxLoginConnectionsPerIP, "not-logged", n)
		}
	}
	if !ok {
		s.Counters.LoginConnLimit.Add(1)
		if ok, n := s.logConnLimit.allow(); ok {
			log.Warn("connection refused: too many connections not logged in, all past their TLS handshake",
				"max-login-connections", s.cfg.MaxLoginConnections,
				"max-login-connections-per-ip", s.cfg.MaxLoginConnectionsPerIP, "not-logged", n)
		}
		raw.Close()
		return
	}
	defer lc.release()
	pl := s.startPreLogin(raw, from)
	defer s.connectionPoint(pl, log)
	ctx = withPreLogin(ctx, pl)
	hctx, cancel := context.WithDeadline(ctx, pl.deadline)
	start := time.Now()
	conn, err := ktlsbridge.Server(hctx, raw, s.tlsCfg, s.cfg.ktls)
	cancel()
	if err != nil {
		s.Counters.TLSHandshakeFailed.Add(1)
		if isTimeout(err) {
			s.preLoginTimedOut(pl, "TLS handshake", log)
		} else if !s.certRefused(err, log) {
			log.Info("TLS handshake failed", "err", err)
		}
		return
	}
	s.Counters.TLSHandshake.Observe(time.Since(start))
	lc.handshakeDone()
	log = log.With("record-layer", conn.Engine().String())
	s.serveConn(ctx, conn, log, lc.release)
}

// serveConn runs the HTTP exchange of a connection whose TLS handshake is
// done: login requests, and at most one CONNECT, after which the
// connection carries the tunnel. It closes conn when it is done, and calls
// loggedIn once the tunnel is up (the connection no longer counts as one
// that has not logged in).
func (s *Server) serveConn(ctx context.Context, conn record.Conn, log *slog.Logger, loggedIn func()) {
	br := session.NewFrameReader(conn)
	pl := preLoginOf(ctx)
	for {
		pl.nextRequest(conn) // login-idle-timeout between requests
		// Every request's head is bounded before it is parsed, the
		// CONNECT's too (cstp.PeekHead leaves the bytes behind it in br).
		if err := cstp.PeekHead(br); err != nil {
			var big *cstp.HeadTooLargeError
			switch {
			case isTimeout(err) && pl != nil:
				s.preLoginTimedOut(pl, "login", log)
			case errors.As(err, &big):
				s.Counters.RequestTooLarge.Add(1)
				s.malformedPoints(remoteAddr(conn), log)
				if ok, n := s.logTooLarge.allow(); ok {
					log.Warn("closing connection: request too large", "why", big.What,
						"limit-bytes", cstp.MaxHeadBytes, "limit-lines", cstp.MaxHeaderLines, "not-logged", n)
				}
				writeResponse(conn, big.Status, "", nil, nil)
			case !errors.Is(err, io.EOF):
				s.badRequest(conn, log)
				log.Info("closing connection: not an HTTP request", "err", err)
				writeResponse(conn, http.StatusBadRequest, "", nil, nil)
			}
			conn.Close()
			return
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.badRequest(conn, log)
				log.Info("closing connection: not an HTTP request", "err", err)
				writeResponse(conn, http.StatusBadRequest, "", nil, nil)
			}
			conn.Close()
			return
		}
		switch {
		case req.Method == http.MethodPost && (req.URL.Path == "/" || req.URL.Path == "/auth"):
			if !s.handleAuth(ctx, conn, req, log) {
				conn.Close()
				return
			}
		case req.Method == http.MethodPost && req.URL.Path == cstp.CookieRefreshPath:
			if !s.handleRefresh(conn, req, log) {
				conn.Close()
				return
			}
		case req.Method == http.MethodConnect && req.URL.Path == cstp.TunnelPath:
			s.handleConnect(ctx, conn, br, req, log, loggedIn)
			return
		default:
			s.badRequest(conn, log)
			log.Info("closing connection: request is not part of the protocol", "method", req.Method, "path", req.URL.Path)
			writeResponse(conn, http.StatusNotFound, "", nil, nil)
			conn.Close()
			return
		}
		if req.Close {
			conn.Close()
			return
		}
	}
}

func remoteAddr(conn record.Conn) netip.Addr {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	return netip.Addr{}
}

// writeResponse writes a complete HTTP/1.1 response with a body.
func writeResponse(conn record.Conn, code int, ctype string, body []byte, extra http.Header) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	b.WriteString("Server: kvpn\r\n")
	if ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	if code >= 400 {
		b.WriteString("Connection: close\r\n")
	} else {
		b.WriteString("Connection: keep-alive\r\n")
	}
	for k, vs := range extra {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, strings.ReplaceAll(v, "\r\n", ""))
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	conn.SetWriteDeadline(time.Now().Add(loginTimeout))
	_, err := conn.Write(b.Bytes())
	return err
}

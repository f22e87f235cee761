package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on the head (request line and header lines) of every HTTP request
// a connection sends, the login POSTs and the CONNECT alike. http.ReadRequest
// has no bound of its own (net/http's Server adds MaxHeaderBytes around it),
// so a header line that never ends would be buffered until the deadline.
// OpenConnect's requests are far below these: its CONNECT has about 20
// headers and under 2 KiB.
const (
	maxHeadBytes   = 16 << 10 // the whole head, request line and blank line included
	maxRequestLine = 4 << 10  // "METHOD URI HTTP/1.1\r\n"
	maxHeaderLines = 100      // header lines (continuation lines count too)
)

// headTooLarge is why peekHead refused a head: the HTTP status to answer
// with and a description for the log.
type headTooLarge struct {
	status int
	what   string
}

func (e *headTooLarge) Error() string { return e.what }

// peekHead waits until br holds the whole head of the next request, without
// consuming it, so that http.ReadRequest then parses bytes already bounded
// and buffered. Scanning the buffer instead of limiting the reader under br
// leaves br untouched: after the CONNECT's head, the bytes it holds are the
// tunnel's first CSTP frames. br must be larger than maxHeadBytes
// (session.NewFrameReader's is 64 KiB).
//
// It returns a *headTooLarge when the request line or the head is over its
// bound (414 URI Too Long, 431 Request Header Fields Too Large, RFC 6585
// section 5), and the read error otherwise; io.EOF means the peer closed
// between requests.
func peekHead(br *bufio.Reader) error {
	limit := min(maxHeadBytes, br.Size())
	// scanned is where the current line starts; searched is how far it
	// has been searched for its '\n', so a line trickling in a byte a read
	// is searched once, not once per byte.
	scanned, searched, lines := 0, 0, 0
	for {
		buf, _ := br.Peek(br.Buffered()) // what is there; does not read
		for {
			i := bytes.IndexByte(buf[searched:], '\n')
			if i < 0 {
				searched = len(buf)
				break
			}
			line := buf[scanned : searched+i+1]
			scanned += len(line)
			searched = scanned
			if lines == 0 && len(line) > maxRequestLine {
				return &headTooLarge{http.StatusRequestURITooLong, "request line too long"}
			}
			if scanned > limit {
				return &headTooLarge{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
			}
			if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
				// The blank line that ends the head (textproto accepts a
				// bare LF as well). A blank first line is left for
				// ReadRequest to refuse.
				return nil
			}
			lines++
			if lines > maxHeaderLines+1 {
				return &headTooLarge{http.StatusRequestHeaderFieldsTooLarge, "too many header lines"}
			}
		}
		if lines == 0 && len(buf) > maxRequestLine {
			return &headTooLarge{http.StatusRequestURITooLong, "request line too long"}
		}
		if len(buf) >= limit {
			return &headTooLarge{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
		}
		// Wait for at least one more byte (one read of the connection).
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// rateLog lets an event that an attacker can trigger at will be logged at
// most once per interval; the line then says how many were not logged.
type rateLog struct {
	last       atomic.Int64 // unix nanoseconds of the latest logged event
	suppressed atomic.Uint64
}

// logInterval is how often a rateLog lets a line through.
const logInterval = 10 * time.Second

// allow reports whether to log this event, and how many events were not
// logged since the latest one that was.
func (r *rateLog) allow() (bool, uint64) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(logInterval) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return false, 0
	}
	return true, r.suppressed.Swap(0)
}

// logUser is a username as logs show it: bounded, since a client chooses it.
func logUser(user string) string {
	const max = 64
	if len(user) > max {
		return user[:max] + "..."
	}
	return user
}

// banPoints adds a wrong password's ban points to addr, logging the moment
// the address becomes banned.
func (s *Server) banPoints(addr netip.Addr, log *slog.Logger) {
	if s.bans.WrongPassword(addr) {
		log.Warn("address banned: ban score reached max-ban-score",
			"max-ban-score", s.cfg.MaxBanScore, "ban-reset-time", s.cfg.BanResetTime)
	}
}

// Session limits, as ocserv names them.
var (
	errMaxClients     = errors.New("server full (max-clients)")
	errMaxSameClients = errors.New("too many sessions for this user (max-same-clients)")
)

// admitSession reports whether one more session of user fits max-clients
// (all sessions) and max-same-clients (the user's); sessions waiting for
// their CONNECT or for a reconnect count, as they hold a cookie and soon an
// address. The caller holds s.admitMu while it checks and creates the
// session, so parallel logins cannot both take the last place.
func (s *Server) admitSession(user string) error {
	maxAll, maxSame := s.cfg.MaxClients, s.cfg.MaxSameClients
	if maxAll == 0 && maxSame == 0 {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if maxAll > 0 && len(s.sessions) >= maxAll {
		return errMaxClients
	}
	if maxSame > 0 {
		n := 0
		for sess := range s.sessions {
			if sess.user == user {
				n++
			}
		}
		if n >= maxSame {
			return errMaxSameClients
		}
	}
	return nil
}

// loginConns counts the connections that have not logged in yet (from
// accept until their CONNECT, or until they close), in all and per source
// address (IPv6 per /64), so that idle or slow handshakes cannot use up the
// daemon's file descriptors and memory.
type loginConns struct {
	mu     sync.Mutex
	total  int
	byAddr map[netip.Prefix]int
}

// acquire counts one more connection from addr, unless that would pass
// maxTotal or maxPerAddr (0 = no bound). release undoes it, once, however
// often it is called.
func (lc *loginConns) acquire(addr netip.Addr, maxTotal, maxPerAddr int) (release func(), ok bool) {
	k := connKey(addr)
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if (maxTotal > 0 && lc.total >= maxTotal) || (maxPerAddr > 0 && lc.byAddr[k] >= maxPerAddr) {
		return func() {}, false
	}
	if lc.byAddr == nil {
		lc.byAddr = map[netip.Prefix]int{}
	}
	lc.total++
	lc.byAddr[k]++
	var once sync.Once
	return func() {
		once.Do(func() {
			lc.mu.Lock()
			defer lc.mu.Unlock()
			lc.total--
			if lc.byAddr[k]--; lc.byAddr[k] <= 0 {
				delete(lc.byAddr, k)
			}
		})
	}, true
}

// connKey is the address a connection counts against: itself for IPv4,
// its /64 for IPv6 (a host usually has a whole /64).
func connKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// addrOf is the IP address of a net.Addr, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// Accept backoff, as net/http's Server: a failing Accept (EMFILE, ENFILE,
// ENOBUFS...) is retried after 5 ms, doubling up to 1 s while it keeps
// failing, so that running out of file descriptors neither spins a core
// nor writes a log line per failure.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptLoop accepts connections on ln and hands each to serve in its own
// goroutine (counted in wg) until ctx ends.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, wg *sync.WaitGroup, serve func(net.Conn)) {
	var delay time.Duration
	var logged rateLog
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Counters.AcceptErrors.Add(1)
			if delay == 0 {
				delay = acceptBackoffMin
			} else {
				delay = min(2*delay, acceptBackoffMax)
			}
			if ok, n := logged.allow(); ok {
				s.log.Error("accept failed; backing off", "err", err, "retry-in", delay.String(), "not-logged", n)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(c)
		}()
	}
}

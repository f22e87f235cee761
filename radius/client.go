package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	layeh "layeh.com/radius"
)

// Counters are the client's counters (`vpnd ctl show stats` lists them as
// radius-* drops).
type Counters struct {
	Accepts, Rejects, Challenges atomic.Uint64
	// NoAnswer counts transmissions that got no valid answer in time;
	// Failovers moves to the next server; Unreachable exchanges that no
	// server answered.
	NoAnswer, Failovers, Unreachable atomic.Uint64
	// Replies dropped: wrong Response Authenticator or
	// Message-Authenticator, and replies that are not RADIUS or not
	// one of the codes expected.
	BadAuthenticator, BadReply atomic.Uint64
	// Access-Accepts refused for what they carry (ParseAccept), and
	// attributes ignored in them (unknown or not applicable).
	BadAttributes, IgnoredAttributes atomic.Uint64
	// Accounting.
	AcctSent, AcctRetried, AcctDropped, AcctQueueFull atomic.Uint64
}

// Client talks to the configured RADIUS servers.
type Client struct {
	cfg *Parsed
	log *slog.Logger
	// preferred is the index of the server that answered last, per list:
	// a failed server is skipped until the preferred one fails too.
	prefAuth, prefAcct atomic.Int32
	Counters           Counters
	lastBadLog         atomic.Int64
}

// NewClient returns a client for cfg.
func NewClient(cfg *Parsed, log *slog.Logger) *Client {
	return &Client{cfg: cfg, log: log.With("component", "radius")}
}

// Config is the client's configuration.
func (c *Client) Config() *Parsed { return c.cfg }

// ErrNoAnswer is returned when no server gave a valid answer.
var ErrNoAnswer = errors.New("no RADIUS server answered")

// msgAuthType is Message-Authenticator (RFC 3579 3.2).
const msgAuthType = 80

// exchange sends p to the servers of list in order, starting with the
// preferred one, each up to retries+1 times, and returns the first valid
// answer. A reply with a wrong authenticator, or malformed, is dropped
// (counted and logged) and the wait goes on.
func (c *Client) exchange(ctx context.Context, p *layeh.Packet, list []string, pref *atomic.Int32) (*layeh.Packet, string, error) {
	wire, err := encode(p)
	if err != nil {
		return nil, "", err
	}
	start := int(pref.Load())
	if start >= len(list) {
		start = 0
	}
	var errs []string
	for i := range list {
		idx := (start + i) % len(list)
		addr := list[idx]
		reply, err := c.exchangeOne(ctx, p, wire, addr)
		if err == nil {
			if idx != start {
				pref.Store(int32(idx))
			}
			return reply, addr, nil
		}
		if ctx.Err() != nil {
			return nil, addr, ctx.Err()
		}
		errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
		if i+1 < len(list) {
			c.Counters.Failovers.Add(1)
			c.log.Warn("RADIUS server not answering; trying the next one", "server", addr, "err", err, "next", list[(idx+1)%len(list)])
		}
	}
	c.Counters.Unreachable.Add(1)
	return nil, "", fmt.Errorf("%w (%s)", ErrNoAnswer, strings.Join(errs, "; "))
}

// exchangeOne is exchange with one server.
func (c *Client) exchangeOne(ctx context.Context, p *layeh.Packet, wire []byte, addr string) (*layeh.Packet, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, layeh.MaxPacketLength)
	var last error
	for try := 0; try <= c.cfg.Retries; try++ {
		if _, err := conn.Write(wire); err != nil {
			last = err
			c.Counters.NoAnswer.Add(1)
			if !sleepCtx(ctx, c.cfg.Timeout) {
				return nil, ctx.Err()
			}
			continue
		}
		deadline := time.Now().Add(c.cfg.Timeout)
		conn.SetReadDeadline(deadline)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					last = fmt.Errorf("no answer within %s", c.cfg.Timeout)
				} else {
					// ICMP unreachable and the like: wait out the try,
					// as the server may come back (a restart).
					last = err
					if !sleepUntil(ctx, deadline) {
						return nil, ctx.Err()
					}
				}
				c.Counters.NoAnswer.Add(1)
				break
			}
			reply, err := c.check(buf[:n], wire, p)
			if err != nil {
				c.logBad(addr, err)
				continue
			}
			return reply, nil
		}
	}
	return nil, last
}

// check validates a reply to the request wire.
func (c *Client) check(b, wire []byte, req *layeh.Packet) (*layeh.Packet, error) {
	if len(b) < 20 || b[1] != wire[1] {
		c.Counters.BadReply.Add(1)
		return nil, errors.New("not a reply to this request (short, or another identifier)")
	}
	reply, err := layeh.Parse(b, req.Secret)
	if err != nil {
		c.Counters.BadReply.Add(1)
		return nil, err
	}
	if !layeh.IsAuthenticResponse(b, wire, req.Secret) {
		c.Counters.BadAuthenticator.Add(1)
		return nil, errors.New("wrong Response Authenticator (wrong shared secret, or forged)")
	}
	switch req.Code {
	case layeh.CodeAccessRequest:
		switch reply.Code {
		case layeh.CodeAccessAccept, layeh.CodeAccessReject, layeh.CodeAccessChallenge:
		default:
			c.Counters.BadReply.Add(1)
			return nil, fmt.Errorf("unexpected %v to an Access-Request", reply.Code)
		}
		ok, present := checkMsgAuth(b, wire[4:20], req.Secret)
		if present && !ok {
			c.Counters.BadAuthenticator.Add(1)
			return nil, errors.New("wrong Message-Authenticator")
		}
		if !present && c.cfg.RequireMsgAuth {
			c.Counters.BadAuthenticator.Add(1)
			return nil, errors.New("no Message-Authenticator (require-message-authenticator)")
		}
	case layeh.CodeAccountingRequest:
		if reply.Code != layeh.CodeAccountingResponse {
			c.Counters.BadReply.Add(1)
			return nil, fmt.Errorf("unexpected %v to an Accounting-Request", reply.Code)
		}
	}
	return reply, nil
}

// logBad logs a dropped reply, at most every 5 s.
func (c *Client) logBad(addr string, err error) {
	now := time.Now().UnixNano()
	l := c.lastBadLog.Load()
	if now-l > int64(5*time.Second) && c.lastBadLog.CompareAndSwap(l, now) {
		c.log.Warn("RADIUS reply dropped", "server", addr, "err", err,
			"bad-authenticator", c.Counters.BadAuthenticator.Load(), "bad-reply", c.Counters.BadReply.Load())
	}
}

// encode encodes p; an Access-Request gets its Message-Authenticator
// (which p must carry as 16 zero bytes) filled in.
func encode(p *layeh.Packet) ([]byte, error) {
	wire, err := p.Encode()
	if err != nil {
		return nil, err
	}
	if p.Code == layeh.CodeAccessRequest {
		off := findAttr(wire, msgAuthType)
		if off < 0 {
			return nil, errors.New("radius: Access-Request without Message-Authenticator")
		}
		m := hmac.New(md5.New, p.Secret)
		m.Write(wire)
		copy(wire[off:off+16], m.Sum(nil))
	}
	return wire, nil
}

// findAttr returns the offset of the value of the first attribute t of a
// 16-byte value in the packet b, or -1.
func findAttr(b []byte, t byte) int {
	for i := 20; i+2 <= len(b); {
		l := int(b[i+1])
		if l < 2 || i+l > len(b) {
			return -1
		}
		if b[i] == t && l == 18 {
			return i + 2
		}
		i += l
	}
	return -1
}

// checkMsgAuth checks a reply's Message-Authenticator: HMAC-MD5 over the
// reply with the Request Authenticator in place of its own and the
// attribute's value zeroed (RFC 3579 3.2).
func checkMsgAuth(b, reqAuth, secret []byte) (ok, present bool) {
	off := findAttr(b, msgAuthType)
	if off < 0 {
		return false, false
	}
	c := append([]byte(nil), b...)
	got := append([]byte(nil), c[off:off+16]...)
	clear(c[off : off+16])
	copy(c[4:20], reqAuth)
	m := hmac.New(md5.New, secret)
	m.Write(c)
	return hmac.Equal(m.Sum(nil), got), true
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool { return sleepCtx(ctx, time.Until(t)) }

package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"kvpn/cstp"
	"kvpn/netcfg"
)

// Reconnect policy. The first retry comes quickly (a dropped connection is
// often back at once); later ones spread out so that many clients of a
// restarted server do not all knock at the same moment.
const (
	backoffFirst = 500 * time.Millisecond
	backoffMax   = 10 * time.Second
)

// backoff yields exponentially growing waits with jitter: each wait is
// drawn uniformly from [d/2, d], and d doubles up to backoffMax.
type backoff struct {
	d    time.Duration
	rand func(n int64) int64
}

func newBackoff() *backoff {
	return &backoff{d: backoffFirst, rand: rand.Int64N}
}

// next returns how long to wait before the next attempt.
func (b *backoff) next() time.Duration {
	d := b.d
	b.d = min(2*b.d, backoffMax)
	half := d / 2
	return half + time.Duration(b.rand(int64(half)+1))
}

// cookieNow returns the current session cookie.
func (t *tunnel) cookieNow() string {
	t.cookieMu.Lock()
	defer t.cookieMu.Unlock()
	return t.cookie
}

func (t *tunnel) setCookie(c string) {
	if c == "" {
		return
	}
	t.cookieMu.Lock()
	t.cookie = c
	t.cookieMu.Unlock()
}

// connected takes what a successful CONNECT on c brought besides the
// tunnel parameters: a renewed cookie and the refresh period.
func (t *tunnel) connected(c *conn, p *cstp.TunnelParams) {
	t.setCookie(c.cookies["webvpn"])
	secs, err := strconv.Atoi(p.Extra.Get(cstp.HeaderCookieRefresh))
	if err != nil || secs <= 0 {
		secs = 0
	}
	t.refreshEvery.Store(int64(secs) * int64(time.Second))
}

// refreshCookie renews the session cookie as often as the server asks,
// while the tunnel runs, so that it stays valid for a reconnect to any of
// the server's nodes (docs/scaling.md). The renewal uses its own short TLS
// connection, which a load balancer may send to any node. Failures are
// logged and retried at the next period: the tunnel itself is unaffected,
// and a cookie the server refuses makes the next reconnect fail.
func (t *tunnel) refreshCookie(ctx context.Context) {
	for {
		every := time.Duration(t.refreshEvery.Load())
		if every <= 0 {
			every = time.Minute // the server may start asking after a reconnect
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if t.refreshEvery.Load() <= 0 || t.cur.Load() == nil {
			continue // not asked for, or reconnecting
		}
		if err := t.refreshOnce(ctx); err != nil {
			t.log.Warn("could not renew the session cookie", "err", err)
		}
	}
}

func (t *tunnel) refreshOnce(ctx context.Context) error {
	c, err := t.o.dial(ctx, t.tlsCfg)
	if err != nil {
		return err
	}
	defer c.close()
	c.cookies["webvpn"] = t.cookieNow()
	resp, _, err := c.post(cstp.CookieRefreshPath, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp, "cookie refresh")
	}
	fresh := c.cookies["webvpn"]
	if fresh == "" {
		return fmt.Errorf("cookie refresh: server sent no cookie")
	}
	t.setCookie(fresh)
	if secs, err := strconv.Atoi(resp.Header.Get(cstp.HeaderCookieRefresh)); err == nil && secs > 0 {
		t.refreshEvery.Store(int64(secs) * int64(time.Second))
	}
	t.log.Debug("session cookie renewed")
	return nil
}

// readdress handles a reconnect that brought a different tunnel address
// (the session resumed on another node, whose pool differs, or the old
// address was taken meanwhile). Unlike openconnect, which gives up, vpnc
// moves the TUN interface to the new address: connections bound to the old
// address break, everything else carries on. Routes and DNS stay those of
// the first connection; a difference is logged.
func (t *tunnel) readdress(p *cstp.TunnelParams) error {
	old := netip.PrefixFrom(t.params.Address, maskBits(t.params.Netmask))
	now := netip.PrefixFrom(p.Address, maskBits(p.Netmask))
	if old == now {
		return nil
	}
	name := t.dev.Name()
	if err := t.changes.SetLink(name, now, 0); err != nil {
		return err
	}
	if err := netcfg.RemoveAddr(name, old); err != nil {
		return err
	}
	t.log.Warn("server assigned a different address on reconnect; interface moved to it",
		"old", old.String(), "new", now.String())
	if !slices.Equal(p.SplitInclude, t.params.SplitInclude) || !slices.Equal(p.SplitExclude, t.params.SplitExclude) ||
		!slices.Equal(p.DNS, t.params.DNS) ||
		p.DefaultDomain != t.params.DefaultDomain {
		t.log.Warn("server pushes different routes or DNS on reconnect; keeping those of the first connection")
	}
	return nil
}

// adopt makes p the tunnel's parameters after a reconnect, keeping the
// routes and DNS that were applied at the start.
func (t *tunnel) adopt(p *cstp.TunnelParams) {
	np := *p
	np.SplitInclude, np.SplitExclude = t.params.SplitInclude, t.params.SplitExclude
	np.DNS, np.DefaultDomain = t.params.DNS, t.params.DefaultDomain
	t.params = &np
}

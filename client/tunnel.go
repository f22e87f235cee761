package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/cstp"
	"kvpn/dtls"
	"kvpn/internal/contain"
	"kvpn/netcfg"
	"kvpn/session"
	"kvpn/tun"
)

// The tunnel once connected: its TUN device, addresses and routes set up
// and undone, and its goroutines run until the tunnel ends.

// serve runs the tunnel that up configured, over ch (DTLS as offer says),
// until ctx ends or the tunnel is lost for good, and then undoes what up
// did (down).
//
// A panic in any of the tunnel's goroutines is recovered, logged with its
// stack and counted (guard); it ends the tunnel like a user's exit (the
// server is told, routes and DNS are restored) and serve returns it as an
// error with ExitTunnelLost, rather than the process dying with the
// system's network still pointed at the tunnel.
func (t *tunnel) serve(parent context.Context, ch *session.CSTPChannel, offer *dtlsParams) (err error) {
	defer t.down()
	ctx, fail := context.WithCancelCause(parent)
	defer fail(nil)
	t.fail = fail
	defer func() {
		// A panic in this goroutine (the reconnect loop): down still
		// runs, after this.
		if v := recover(); v != nil {
			err = &Error{Code: ExitTunnelLost, Err: contain.Recovered(t.log, "tunnel loop", v, &t.panics)}
		}
	}()
	params := t.params
	t.cur.Store(ch)
	go t.guard("downlink", func() error { t.downlink(); return nil })
	dctx, stopDTLS := context.WithCancel(ctx)
	up := t.startDTLS(dctx, offer)
	// The up line names the transport, so it waits for the first DTLS
	// attempt (up to dtlsHandshakeTimeout); the TLS channel is served
	// meanwhile: a server with a short DPD must get its answers, and its
	// packets must not pile up unread.
	go t.guard("status", func() error {
		select {
		case <-up:
		case <-ctx.Done():
			return nil
		}
		transport := "none (reconnecting)"
		if s := t.sender(); s != nil {
			transport = s.Name()
		}
		t.log.Info(fmt.Sprintf("tunnel up: address %s/%d%s, MTU %d, routes %s, DNS %s, transport %s",
			params.Address, maskBits(params.Netmask), t.ipv6Desc(), params.MTU, t.routeDesc(), addrList(params.DNS), transport))
		if t.o.OnUp != nil {
			t.o.OnUp(params, transport)
		}
		return nil
	})
	rctx, stopRefresh := context.WithCancel(ctx)
	defer stopRefresh()
	go t.guard("cookie refresh", func() error { t.refreshCookie(rctx); return nil })
	err = t.loop(ctx, ch, stopDTLS)
	var pe *contain.PanicError
	if errors.As(context.Cause(ctx), &pe) {
		return &Error{Code: ExitTunnelLost, Err: fmt.Errorf("tunnel shut down after an internal error: %w", pe)}
	}
	return err
}

// guard runs f, the body of one of the tunnel's goroutines, and returns
// its error. A panic in f is recovered, logged with its stack, counted,
// and returned; it also ends the tunnel (serve's context, cancelled with
// the panic as its cause), whose state is no longer to be trusted.
func (t *tunnel) guard(where string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := contain.Recovered(t.log, where, v, &t.panics)
			if t.fail != nil {
				t.fail(pe)
			}
			err = pe
		}
	}()
	return f()
}

// tunnel is a running client tunnel.
type tunnel struct {
	o      *Options
	log    *slog.Logger
	tlsCfg *tls.Config
	params *cstp.TunnelParams

	// cookie is the session cookie, renewed by the server on CONNECT and
	// by refreshCookie (guarded by cookieMu).
	cookieMu sync.Mutex
	cookie   string
	// refreshEvery is how often the server wants the cookie renewed
	// (X-Kvpn-Cookie-Refresh), 0 if it does not.
	refreshEvery atomic.Int64
	// lastParams is the latest CONNECT answer (it carries the DTLS offer
	// of the current TLS connection).
	lastParams *cstp.TunnelParams
	dev        tun.Device
	changes    *netcfg.Changes
	plan       routePlan      // the routes applyRoutes installed
	routes6    []netip.Prefix // the pushed IPv6 routes (ipv6.go)
	// server is the address the TLS connection reached, pinned outside
	// the tunnel.
	server netip.Addr

	cur       atomic.Pointer[session.CSTPChannel]
	dtls      atomic.Pointer[dtls.ClientChannel]
	downDone  chan struct{}
	closeOnce sync.Once

	// fail ends serve after a panic in one of the tunnel's goroutines
	// (guard); set by serve before it starts them.
	fail context.CancelCauseFunc
	// Failures contained (issue #12): recovered panics, and failed TUN
	// reads of the downlink, each followed by a backoff (lastReadLog
	// rate-limits their log line).
	panics, readErrors atomic.Uint64
	lastReadLog        time.Time
	// testPanic, nil but in tests, is called by the downlink after each
	// TUN read that returned packets, so a test can make it panic.
	testPanic func(where string)
}

// fullTunnel is how a default route is installed: two halves that are more
// specific than any existing default route, so the original one need not
// be touched and comes back by itself when ours are deleted.
var fullTunnel = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}

// up creates and configures the TUN interface, routes and DNS.
func (t *tunnel) up() error {
	p := t.params
	t.changes = netcfg.New()
	dev, err := tun.Create(t.o.Interface, p.MTU, t.o.TunBackend)
	if err != nil {
		return withCode(ExitTunnelLost, fmt.Errorf("creating TUN device: %w", err))
	}
	t.dev = dev
	t.downDone = make(chan struct{})
	name := dev.Name()
	// No IPv6 was assigned: keep the kernel from sending router
	// solicitations and MLD reports into the tunnel.
	if !p.AddressIP6.IsValid() {
		os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	}
	if err := t.changes.SetLink(name, netip.PrefixFrom(p.Address, maskBits(p.Netmask)), p.MTU); err != nil {
		return withCode(ExitTunnelLost, err)
	}
	if err := t.upIPv6(name); err != nil {
		return withCode(ExitTunnelLost, err)
	}
	if err := t.applyRoutes(name); err != nil {
		return err
	}
	return t.applyDNS(name)
}

// down undoes everything up did, in reverse order.
func (t *tunnel) down() {
	t.closeOnce.Do(func() {
		if t.changes != nil {
			if err := t.changes.Restore(); err != nil {
				t.log.Warn("restoring network settings", "err", err)
			}
		}
		if t.dev != nil {
			t.dev.Close()
			if t.downDone != nil {
				select {
				case <-t.downDone:
				case <-time.After(2 * time.Second):
				}
			}
		}
	})
}

func (t *tunnel) routeDesc() string { return t.plan.describe() }

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, ",")
}

func maskBits(m netip.Addr) int {
	if !m.Is4() {
		return 32
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for v&0x80000000 != 0 {
		n++
		v <<= 1
	}
	return n
}

package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"kvpn/cstp"
	"kvpn/internal/contain"
	"kvpn/record"
	"kvpn/session"
	"kvpn/tun"
)

// uplinkBatch is how many packets from the server are written to the TUN
// device in one call.
const uplinkBatch = 64

// downlink reads packets from the TUN device and sends them over the
// current channel: the client's transmit hot loop. Packets are sent from
// the buffers they were read into; the CSTP header goes into the headroom.
// While the tunnel is reconnecting there is no channel and packets drop,
// as on any link that is down.
func (t *tunnel) downlink() {
	defer close(t.downDone)
	bufs := tun.NewBuffers(t.dev.BatchSize())
	sizes := make([]int, len(bufs))
	out := make([][]byte, 0, len(bufs))
	vd, _ := t.dev.(tun.VirtioDevice)
	var gso *gsoBufs // made on first use
	var backoff contain.Backoff
	for {
		if ch := t.gsoChannel(vd); ch != nil {
			if gso == nil {
				gso = newGSOBufs()
			}
			switch err := t.sendGSO(vd, gso); {
			case errors.Is(err, os.ErrClosed):
				return
			case err != nil:
				t.readFailed(&backoff, err)
			default:
				backoff.Reset()
			}
			continue
		}
		n, err := t.dev.Read(bufs, sizes, tun.Headroom)
		if err != nil && n == 0 {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			t.readFailed(&backoff, err)
			continue
		}
		backoff.Reset()
		if t.testPanic != nil {
			t.testPanic("downlink")
		}
		ch := t.sender()
		if ch == nil {
			continue
		}
		out = out[:0]
		for i := range n {
			out = append(out, bufs[i][:tun.Headroom+sizes[i]])
		}
		if err := ch.WritePackets(out, tun.Headroom); err != nil {
			// The uplink's read fails too once the connection is closed,
			// which starts the reconnect.
			ch.Close()
		}
	}
}

// readFailed counts a failed TUN read of the downlink and waits before
// the next one (b: from contain.ReadMin doubling to contain.ReadMax, reset
// by a read that succeeds), so that a device failing every read cannot
// turn the loop into a spin. One log line per 5 s at most.
func (t *tunnel) readFailed(b *contain.Backoff, err error) {
	n := t.readErrors.Add(1)
	d := b.Next()
	if now := time.Now(); now.Sub(t.lastReadLog) > 5*time.Second {
		t.lastReadLog = now
		t.log.Warn("TUN read failed; backing off", "err", err, "retry-in", d.String(), "read-errors", n)
	}
	time.Sleep(d)
}

// gsoBatch is how many GSO frames the client reads from its TUN device
// before sending them (a burst of ACKs leaves in one system call).
const gsoBatch = 32

// gsoBufs are the client's buffers for GSO frames: tun.Headroom in front
// (CSTP and record headers), room for the largest frame, and record
// tailroom behind.
type gsoBufs struct {
	bufs  [][]byte // whole buffers
	views [][]byte // bufs[i][tun.Headroom:], what ReadGSOBatch fills
	out   [][]byte // bufs[i][:tun.Headroom+size], what is sent
	sizes []int
}

func newGSOBufs() *gsoBufs {
	const size = tun.Headroom + tun.VirtioHdrLen + tun.MaxPacketSize + record.Tailroom
	g := &gsoBufs{bufs: make([][]byte, gsoBatch), views: make([][]byte, gsoBatch), sizes: make([]int, gsoBatch)}
	mem := make([]byte, gsoBatch*size)
	for i := range g.bufs {
		g.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
		g.views[i] = g.bufs[i][tun.Headroom : size-record.Tailroom]
	}
	g.out = make([][]byte, 0, gsoBatch)
	return g
}

// sendGSO reads a batch of GSO frames from the TUN device and sends them
// whole over the TLS channel. They are sent even if DTLS came up meanwhile
// (the TLS channel still works); they are dropped, like any packet, while
// there is no channel or the current one does not take GSO frames
// (reconnected to a server without the extension).
func (t *tunnel) sendGSO(vd tun.VirtioDevice, g *gsoBufs) error {
	n, err := vd.ReadGSOBatch(g.views, g.sizes)
	if err != nil {
		return err
	}
	ch := t.cur.Load()
	if ch == nil || !ch.PeerGSO() {
		return nil
	}
	g.out = g.out[:0]
	for i := range n {
		g.out = append(g.out, g.bufs[i][:tun.Headroom+g.sizes[i]])
	}
	if err := ch.WriteGSOBatch(g.out, tun.Headroom); err != nil {
		ch.Close() // the uplink's read fails too, which starts the reconnect
	}
	clear(g.out)
	return nil
}

// loop runs the tunnel over ch, reconnecting when ch is lost, until ctx
// ends or the tunnel is lost for good.
func (t *tunnel) loop(ctx context.Context, ch *session.CSTPChannel, stopDTLS context.CancelFunc) error {
	bufs := tun.NewBuffers(uplinkBatch)
	defer func() { stopDTLS() }()
	for {
		err := t.run(ctx, ch, bufs)
		// DTLS was keyed from this TLS connection: it goes with it.
		stopDTLS()
		if d := t.dtls.Swap(nil); d != nil {
			d.Close()
		}
		if ctx.Err() != nil {
			return nil // run told the server
		}
		t.cur.Store(nil)
		ch.Close()
		var pc *session.PeerClosedError
		if errors.As(err, &pc) && !(pc.Terminate && pc.Reason == cstp.ReasonServerShutdown) {
			return withCode(ExitTunnelLost, fmt.Errorf("server ended the session: %s", pc.Reason))
		}
		// A lost connection, or a vpnd that stops (restart, or a node
		// taken out of a cluster): the session lives on in the cookie.
		t.log.Warn("connection to server lost; reconnecting", "err", err, "reconnect-timeout", t.o.ReconnectTimeout.String())
		var c *conn
		ch, c, err = t.reconnect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, errCookieRefused) {
				return withCode(ExitAuth, err)
			}
			if errors.Is(err, errUnusableParams) {
				return withCode(ExitUnreachable, err)
			}
			// Whatever made the last attempt fail, the tunnel is lost.
			return &Error{Code: ExitTunnelLost, Err: err}
		}
		t.cur.Store(ch)
		t.log.Info("tunnel re-established", "address", t.params.Address.String(), "transport", ch.Name())
		var dctx context.Context
		dctx, stopDTLS = context.WithCancel(ctx)
		t.startDTLS(dctx, t.dtlsOffer(c, t.lastParams))
	}
}

// run pumps packets from ch to the TUN device and watches ch's liveness,
// until either fails or ctx ends.
func (t *tunnel) run(parent context.Context, ch *session.CSTPChannel, bufs [][]byte) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	dpd := time.Duration(t.params.DPD) * time.Second
	if t.o.ForceDPD > 0 {
		dpd = t.o.ForceDPD
	}
	live := session.Liveness{DPD: dpd, Keepalive: time.Duration(t.params.Keepalive) * time.Second}
	errc := make(chan error, 2)
	go func() {
		errc <- t.guard("uplink", func() error { return session.Uplink(ch, t.dev, bufs, tun.Headroom, nil) })
	}()
	go func() { errc <- t.guard("liveness", func() error { return session.KeepAlive(ctx, ch, live) }) }()
	var err error
	pending := 2
	select {
	case err = <-errc:
		pending--
	case <-ctx.Done():
	}
	cancel()
	if parent.Err() != nil {
		// User exit: tell the server (user logout ends the session there),
		// which also closes the connection and so ends the uplink.
		t.log.Info("disconnecting")
		t.cur.Store(nil)
		reason := "user logout"
		var pe *contain.PanicError
		if errors.As(context.Cause(parent), &pe) {
			reason = "client internal error"
		}
		ch.Disconnect(reason)
	} else {
		ch.Close()
	}
	for range pending {
		if e := <-errc; err == nil {
			err = e
		}
	}
	return err
}

// reconnect re-establishes the tunnel with the session cookie, with
// exponential backoff and jitter, until ReconnectTimeout has passed. The
// TUN interface, its address, routes and DNS stay as they are meanwhile
// (packets to the tunnel are dropped, as on any link that is down), and no
// password is asked for. A refused cookie ends the attempt at once.
func (t *tunnel) reconnect(ctx context.Context) (*session.CSTPChannel, *conn, error) {
	deadline := time.Now().Add(t.o.ReconnectTimeout)
	actx, cancel := context.WithDeadline(ctx, deadline.Add(time.Second))
	defer cancel()
	b := newBackoff()
	for attempt := 1; ; attempt++ {
		ch, c, err := t.reconnectOnce(actx)
		if err == nil {
			return ch, c, nil
		}
		if errors.Is(err, errCookieRefused) || errors.Is(err, errUnusableParams) || errors.Is(err, errCertRefused) {
			return nil, nil, err
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("gave up reconnecting after %s: %w", t.o.ReconnectTimeout, err)
		}
		wait := min(b.next(), left)
		t.log.Info("reconnect failed; retrying", "attempt", attempt, "err", err, "retry-in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (t *tunnel) reconnectOnce(ctx context.Context) (*session.CSTPChannel, *conn, error) {
	c, err := t.o.dial(ctx, t.tlsCfg)
	if err != nil {
		return nil, nil, err
	}
	p, err := t.o.connect(c, t.cookieNow(), t.params.Address, t.params.AddressIP6)
	err = certRefusal(err)
	if err == nil {
		// A reconnect may bring new addresses (readdress): the same checks.
		p, err = t.o.check(p, t.dev.Name(), t.server)
		err = withCode(ExitUnreachable, err)
	}
	if err != nil {
		c.close()
		return nil, nil, err
	}
	if err := t.readdress(p); err != nil {
		c.close()
		return nil, nil, withCode(ExitTunnelLost, fmt.Errorf("moving to the address assigned on reconnect: %w", err))
	}
	if err := t.readdress6(p); err != nil {
		c.close()
		return nil, nil, withCode(ExitTunnelLost, fmt.Errorf("moving to the IPv6 address assigned on reconnect: %w", err))
	}
	t.connected(c, p)
	t.adopt(p)
	t.lastParams = p
	ch, err := newChannel(c, p, t.params.MTU)
	if err == nil {
		t.acceptGSO(ch, p)
	}
	return ch, c, err
}

// clientFrameLimit is the largest DATA payload vpnc accepts: like
// openconnect, max(MTU, 16384), since a server's own MTU may exceed what
// it told us (vpnd lowers the MTU it announces for connection-ID DTLS).
func clientFrameLimit(mtu int) int { return max(mtu, 16384) }

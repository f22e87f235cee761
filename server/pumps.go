package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"kvpn/dtls"
	"kvpn/internal/contain"
	"kvpn/session"
	"kvpn/tun"
)

// A connected session's goroutines (run): the uplink pump, the sender
// (downlink.go) and the liveness watch, each contained so that a panic
// ends only this session; and the checks every packet from the client
// passes (source address, routes).

// run pumps the session's packets over ch until ch fails. The uplink runs
// in the calling goroutine (the connection's own, which would only wait
// otherwise): one goroutine stack fewer per session.
func (sess *Session) run(ctx context.Context, ch *session.CSTPChannel, log *slog.Logger) error {
	s := sess.srv
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first of the three to return ends the others: its error is the
	// channel's, and closing ch unblocks the uplink's read.
	var first error
	var once sync.Once
	stop := func(err error) {
		once.Do(func() {
			first = err
			cancel()
			ch.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		stop(sess.contained("sender", func() error { return sess.sendLoop(ctx, ch) }))
	}()
	go func() {
		defer wg.Done()
		stop(sess.contained("liveness", func() error { return sess.keepAlive(ctx, ch) }))
	}()
	// Buffers from the server's pool, only while packets are in flight:
	// an idle session holds none (64 x 64 KiB each before).
	stop(sess.contained("uplink", func() error {
		return session.UplinkPooled(ch, s.tunOut, s.uplinks, tun.Headroom, sess.checkTLS, &sess.traffic)
	}))
	wg.Wait()
	return first
}

// contained runs f, one of the session's pumps or its liveness watch, and
// returns its error. A panic in f is recovered, logged with its stack,
// counted (Counters.PanicsSession) and returned as a *contain.PanicError:
// run then stops the session's other goroutines and detach ends this
// session, while the server and every other session go on.
func (sess *Session) contained(where string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = contain.Recovered(sess.srv.log, "session "+where, v, &sess.srv.Counters.PanicsSession,
				"user", sess.user, "session", sess.id)
		}
	}()
	return f()
}

// drainQueue puts the batches waiting in the session's queue back into
// the pool: those of a write that failed, or queued while the connection
// went away.
func (sess *Session) drainQueue() {
	for {
		select {
		case b := <-sess.queue:
			sess.srv.putBatch(b)
		default:
			return
		}
	}
}

// keepAlive runs dead-peer detection and keepalives for the TLS channel
// and, while there is one, the session's DTLS peer, from one goroutine
// (each had its own: one stack fewer per session). It returns when ctx
// ends (nil) or the TLS channel is dead; a dead DTLS peer is dropped and
// traffic moves to TLS, as openconnect and ocserv do.
func (sess *Session) keepAlive(ctx context.Context, ch *session.CSTPChannel) error {
	s := sess.srv
	// keepalive is the interval the client is told (X-CSTP-Keepalive,
	// X-DTLS-Keepalive) to keep its idle channels and their NAT bindings
	// alive with; vpnd itself sends no keepalives, only DPD requests to a
	// channel silent for dpd, as ocserv's worker does: the client's
	// keepalives already refresh the binding, and at 10k idle sessions
	// the server's own would double the records it seals and opens.
	l := session.Liveness{DPD: s.cfg.dpd()}
	if h := s.testPanic; h != nil {
		h("liveness", sess)
	}
	// It sleeps until the earlier of the two channels' next deadlines
	// (session.Watch.Check), woken early when a new DTLS peer comes up.
	t := time.NewTimer(l.MinWait())
	defer t.Stop()
	tls := session.NewWatch(ch, l)
	var peer session.Watch
	var watched *dtls.Peer
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-sess.watchWake:
		}
		now := time.Now()
		next, err := tls.Check(now)
		if err != nil {
			return err
		}
		if p := sess.peer.Load(); p != nil {
			if p != watched {
				watched, peer = p, session.NewWatch(p, l)
			}
			if !p.Up() {
				sess.lostDTLS(p, errPeerClosed)
			} else if pn, err := peer.Check(now); err != nil {
				sess.lostDTLS(p, err)
			} else if !pn.IsZero() && (next.IsZero() || pn.Before(next)) {
				next = pn
			}
		}
		t.Reset(l.Wait(now, next)) // Go 1.23 timers: Reset drops a stale tick

	}
}

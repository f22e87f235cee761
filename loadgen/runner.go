package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// timerTick is how often the timer goroutine runs every session's DPD and
// keepalive checks: one goroutine for all sessions, not a ticker each.
// Servers push DPD and keepalive in whole seconds, so a quarter of the
// smallest sensible value (2 s) keeps DPD within its 2 x DPD bound.
const timerTick = 500 * time.Millisecond

// progressEvery is the period of the progress line.
const progressEvery = time.Second

type runner struct {
	cfg    *Config
	tlsCfg *tls.Config
	stats  *Stats
	sem    chan struct{}
	tokens chan struct{} // nil without a rate limit

	mu   sync.Mutex
	live map[*sess]struct{}
}

// Run runs the load described by cfg until the hold time is over or ctx
// ends, then ends every session (with DISCONNECT unless cfg.NoDisconnect)
// and returns the summary.
func Run(ctx context.Context, cfg *Config) (*Summary, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	st := cfg.Stats
	if st == nil {
		st = &Stats{}
	}
	r := &runner{cfg: cfg, tlsCfg: tlsCfg, stats: st, sem: make(chan struct{}, cfg.Parallel), live: map[*sess]struct{}{}}
	// Sessions end when stopSessions is called, not with ctx: the summary
	// samples the sessions up when ctx ends, before they start to go.
	sctx, stopSessions := context.WithCancel(context.Background())
	defer stopSessions()
	bg, stopBG := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	defer func() { stopBG(); bgWG.Wait() }()
	if cfg.Rate > 0 {
		r.tokens = make(chan struct{})
		bgWG.Add(1)
		go func() { defer bgWG.Done(); r.pace(bg) }()
	}
	bgWG.Add(1)
	go func() { defer bgWG.Done(); r.timers(bg) }()
	if cfg.Progress != nil {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); r.progress(bg) }()
	}

	start := time.Now()
	var ramp, slots sync.WaitGroup
	ramp.Add(cfg.Sessions)
	slots.Add(cfg.Sessions)
	for i := range cfg.Sessions {
		go func() {
			defer slots.Done()
			r.slot(sctx, i, ramp.Done)
		}()
	}
	rampDone := make(chan struct{})
	go func() { ramp.Wait(); close(rampDone) }()
	select {
	case <-rampDone:
	case <-ctx.Done():
	}
	rampTime := time.Since(start)
	rampConnects := r.stats.Connects.Load()
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	} else {
		<-ctx.Done()
	}
	sum := r.summary(rampTime, rampConnects)
	stopSessions()
	slots.Wait()
	sum.finish(r.stats)
	return sum, nil
}

// pace hands out one login token every 1/Rate seconds.
func (r *runner) pace(ctx context.Context) {
	t := time.NewTicker(time.Duration(float64(time.Second) / r.cfg.Rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case r.tokens <- struct{}{}:
		case <-ctx.Done():
			return
		}
	}
}

// slot keeps one session: logs in, holds the tunnel, and with --churn
// replaces it after its lifetime (or after a failure). rampDone is called
// once the first attempt is up or has failed.
func (r *runner) slot(ctx context.Context, id int, rampDone func()) {
	first := true
	signal := func() {
		if first {
			first = false
			rampDone()
		}
	}
	defer signal()
	for ctx.Err() == nil {
		s, err := r.open(ctx, id)
		signal()
		if err != nil {
			if ctx.Err() == nil {
				r.stats.fail(reasonOf(err))
				r.cfg.Log.Debug("session failed", "session", id, "err", err)
			}
			if r.cfg.ChurnMax == 0 {
				return
			}
			// A soak keeps its slots filled, after a pause so a refusing
			// server is not hammered.
			select {
			case <-ctx.Done():
			case <-time.After(r.cfg.ChurnMin):
			}
			continue
		}
		err = r.hold(ctx, s)
		if err != nil {
			r.stats.fail(reasonOf(err))
			r.cfg.Log.Debug("session ended", "session", id, "err", err)
			if r.cfg.ChurnMax == 0 {
				return
			}
		}
	}
}

// open waits for a login slot (Parallel, Rate) and sets a session up.
func (r *runner) open(ctx context.Context, id int) (*sess, error) {
	if r.tokens != nil {
		select {
		case <-r.tokens:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.stats.LoggingIn.Add(1)
	s, err := r.setup(ctx, id)
	r.stats.LoggingIn.Add(-1)
	<-r.sem
	return s, err
}

// hold runs an up session until it fails, ctx ends or its churn lifetime
// is over, and tears it down. It returns the failure, nil for a clean end.
func (r *runner) hold(ctx context.Context, s *sess) error {
	r.stats.up()
	r.mu.Lock()
	r.live[s] = struct{}{}
	r.mu.Unlock()
	s.start()
	var life <-chan time.Time
	if r.cfg.ChurnMax > 0 {
		d := r.cfg.ChurnMin + rand.N(r.cfg.ChurnMax-r.cfg.ChurnMin+1)
		t := time.NewTimer(d)
		defer t.Stop()
		life = t.C
	}
	select {
	case <-ctx.Done():
	case <-s.done:
	case <-life:
		r.stats.Churned.Add(1)
	}
	s.stop()
	r.mu.Lock()
	delete(r.live, s)
	r.mu.Unlock()
	r.stats.Up.Add(-1)
	return s.endErr
}

// timers runs every live session's DPD and keepalive checks.
func (r *runner) timers(ctx context.Context) {
	t := time.NewTicker(timerTick)
	defer t.Stop()
	var list []*sess
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.mu.Lock()
			list = list[:0]
			for s := range r.live {
				list = append(list, s)
			}
			r.mu.Unlock()
			for _, s := range list {
				s.tick(now)
			}
			clear(list)
		}
	}
}

// progress writes a line once a second: sessions up, logging in, DTLS up,
// failures, logins (tunnels up) per second over the last second.
func (r *runner) progress(ctx context.Context) {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	st := r.stats
	start := time.Now()
	last := uint64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c := st.Connects.Load()
			fmt.Fprintf(r.cfg.Progress, "%6.0fs up %d/%d  logging in %d  dtls %d  failed %d  logins/s %d\n",
				now.Sub(start).Seconds(), st.Up.Load(), r.cfg.Sessions, st.LoggingIn.Load(), st.DTLSUp.Load(), st.failureTotal(), c-last)
			last = c
		}
	}
}

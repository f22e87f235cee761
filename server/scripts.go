package server

// Issue #15: connect-script and disconnect-script, as ocserv's.

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/ctl"
)

const (
	// scriptConcurrency bounds the scripts running at once.
	scriptConcurrency = 16
	// maxScriptsWaiting bounds the disconnect-scripts waiting for a slot
	// (each holds a goroutine); beyond it a run is skipped and counted.
	maxScriptsWaiting = 1024
	// scriptOutputMax is how much of a failed script's output is logged.
	scriptOutputMax = 512
)

// opsState is the server's part of issue #15's operator features: the
// script slots and the subscribers of `vpnd ctl show events`.
type opsState struct {
	once    sync.Once
	slots   chan struct{}
	waiting atomic.Int64

	evMu sync.Mutex
	subs map[chan ctl.Event]struct{}
	// EventsDropped counts events a slow subscriber missed.
	eventsDropped atomic.Uint64
}

func (o *opsState) sem() chan struct{} {
	o.once.Do(func() { o.slots = make(chan struct{}, scriptConcurrency) })
	return o.slots
}

// sessOps is a session's part: whether its tunnel came up (connect-script
// done) and where from.
type sessOps struct {
	mu       sync.Mutex
	up       bool       // the first tunnel came up (after its connect-script)
	realIP   netip.Addr // the client's address when it came up
	upAt     time.Time
	endEvent bool // the session-end event was published
}

// scriptEnv is the environment ocserv gives its scripts.
func (s *Server) scriptEnv(sess *Session, reason string, realIP netip.Addr) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"REASON=" + reason,
		"USERNAME=" + sess.user,
		"ID=" + strconv.FormatUint(sess.id, 10),
		"IP_REAL=" + addrString(realIP),
	}
	if set := s.currentSettings(); set != nil && set.Passwd != nil {
		if g, ok := set.Passwd.Group(sess.user); ok && g != "" {
			env = append(env, "GROUPNAME="+g)
		}
	}
	if s.dev != nil {
		env = append(env, "DEVICE="+s.dev.Name())
	}
	sess.mu.Lock()
	addr, addr6 := sess.addr, sess.addr6
	sess.mu.Unlock()
	if addr.IsValid() {
		env = append(env, "IP_REMOTE="+addr.String())
	}
	if addr6.IsValid() {
		env = append(env, "IPV6_REMOTE="+addr6.String())
	}
	if s.pool != nil {
		env = append(env, "IP_LOCAL="+s.pool.gateway.String())
	}
	return env
}

// runScript runs path with env within script-timeout, waiting for a slot
// (bounded by the same timeout). It returns the error and the start of
// the script's output.
func (s *Server) runScript(path string, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.ScriptTimeout)*time.Second)
	defer cancel()
	sem := s.ops.sem()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	defer func() { <-sem }()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout = &limitedBuffer{b: &out, n: scriptOutputMax}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = time.Second // a child keeping the output open cannot hold us
	err := cmd.Run()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return out.String(), err
}

// limitedBuffer keeps the first n bytes written to it.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// tunnelUp is called when a session's tunnel is about to come up, before
// the CONNECT answer: the first time, it runs connect-script, whose
// failure refuses the session (it ends, its addresses are freed). It
// reports whether the tunnel may come up.
func (s *Server) tunnelUp(sess *Session, realIP netip.Addr, log *slog.Logger) bool {
	sess.ops.mu.Lock()
	first := !sess.ops.up
	sess.ops.mu.Unlock()
	if first && s.cfg.ConnectScript != "" {
		out, err := s.runScript(s.cfg.ConnectScript, s.scriptEnv(sess, "connect", realIP))
		if err != nil {
			s.Counters.ConnectScriptFail.Add(1)
			log.Warn("session refused: connect-script failed", "script", s.cfg.ConnectScript, "err", err,
				"output", out, "connect-script-failures", s.Counters.ConnectScriptFail.Load())
			sess.end("connect-script failed")
			return false
		}
	}
	if first {
		sess.ops.mu.Lock()
		sess.ops.up, sess.ops.realIP, sess.ops.upAt = true, realIP, time.Now()
		sess.ops.mu.Unlock()
	}
	return true
}

// sessionEnded runs after a session ended and freed its addresses: the
// end event, and disconnect-script (in its own goroutine) if the session
// ever came up.
func (s *Server) sessionEnded(sess *Session, reason string, addr, addr6 netip.Addr, t Totals) {
	sess.ops.mu.Lock()
	up, realIP, upAt := sess.ops.up, sess.ops.realIP, sess.ops.upAt
	sess.ops.mu.Unlock()
	s.publish(ctl.Event{Type: ctl.EventEnd, ID: sess.id, User: sess.user, Address: optAddr(addr),
		Address6: optAddr(addr6), Remote: optAddr(sess.from), Reason: reason,
		BytesIn: t.InBytes, BytesOut: t.OutBytes, DurationSeconds: int64(time.Since(sess.created).Seconds())})
	if !up || s.cfg.DisconnectScript == "" {
		return
	}
	if s.ops.waiting.Add(1) > maxScriptsWaiting {
		s.ops.waiting.Add(-1)
		s.Counters.ScriptsSkipped.Add(1)
		if ok, n := s.logScript.allow(); ok {
			s.log.Warn("disconnect-script not run: too many waiting", "user", sess.user, "session", sess.id,
				"waiting", maxScriptsWaiting, "not-logged", n)
		}
		return
	}
	env := s.scriptEnv(sess, "disconnect", realIP)
	// scriptEnv reads the addresses from the session, which end cleared
	// only from the tables: name them as they were.
	env = append(env,
		"STATS_BYTES_IN="+strconv.FormatUint(t.InBytes, 10),
		"STATS_BYTES_OUT="+strconv.FormatUint(t.OutBytes, 10),
		"STATS_DURATION="+strconv.FormatInt(int64(time.Since(upAt).Seconds()), 10))
	go func() {
		defer s.ops.waiting.Add(-1)
		out, err := s.runScript(s.cfg.DisconnectScript, env)
		if err != nil {
			s.Counters.DisconnectScriptFail.Add(1)
			s.log.Warn("disconnect-script failed", "user", sess.user, "session", sess.id,
				"script", s.cfg.DisconnectScript, "err", err, "output", out)
		}
	}()
}

// optAddr is a, or "" when it is not valid.
func optAddr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

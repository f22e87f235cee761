package server

import (
	"fmt"
	"strings"

	"kvpn/ctl"
)

// HandleCtl answers a control-socket request (ctl.Handler).
func (s *Server) HandleCtl(req ctl.Request) ctl.Reply {
	switch req.Command {
	case ctl.CmdShowUsers:
		return ctl.Reply{OK: true, Users: s.Users()}
	case ctl.CmdShowUser:
		var us []ctl.User
		for _, u := range s.Users() {
			if u.User == req.Args[0] {
				us = append(us, u)
			}
		}
		if len(us) == 0 {
			return s.noSession(req.Args[0])
		}
		return ctl.Reply{OK: true, Users: us}
	case ctl.CmdShowStats:
		return ctl.Reply{OK: true, Stats: s.ctlStats()}
	case ctl.CmdDisconnectUser:
		n := 0
		for _, sess := range s.list() {
			if sess.user == req.Args[0] {
				sess.terminate("disconnected by the operator")
				n++
			}
		}
		if n == 0 {
			return s.noSession(req.Args[0])
		}
		s.log.Info("operator disconnected user", "user", req.Args[0], "sessions", n)
		return ctl.Reply{OK: true, Message: fmt.Sprintf("disconnected %d session(s) of %s", n, req.Args[0])}
	case ctl.CmdDisconnectID:
		id, err := ctl.ParseID(req.Args[0])
		if err != nil {
			return ctl.Reply{Error: err.Error()}
		}
		for _, sess := range s.list() {
			if sess.id == id {
				sess.terminate("disconnected by the operator")
				s.log.Info("operator disconnected session", "user", sess.user, "session", id)
				return ctl.Reply{OK: true, Message: fmt.Sprintf("disconnected session %d (%s)", id, sess.user)}
			}
		}
		return ctl.Errorf("no session with id %d", id)
	case ctl.CmdReload:
		res, err := s.ReloadFromSource()
		if err != nil {
			return ctl.Errorf("reload failed, running configuration kept: %v", err)
		}
		msg := "configuration reloaded"
		if len(res.Applied) > 0 {
			msg += "; changed: " + strings.Join(res.Applied, ", ")
		}
		rep := ctl.Reply{OK: true, Message: msg}
		for _, k := range res.Restart {
			rep.Warn = append(rep.Warn, fmt.Sprintf("%s changed but needs a restart; the running value stays", k))
		}
		for _, e := range res.Partial {
			rep.Warn = append(rep.Warn, "not applied: "+e.Error())
		}
		return rep
	}
	if rep, ok := s.handleOps(req); ok { // issue #15 (ctlops.go)
		return rep
	}
	return ctl.Errorf("unknown command %q", req.Command)
}

func (s *Server) ctlStats() *ctl.Stats {
	snap := s.Snapshot()
	st := &ctl.Stats{
		ByTransport:    snap.Sessions,
		Logins:         snap.Logins,
		LoginFailures:  snap.LoginFailures,
		LoginThrottled: snap.LoginThrottled,
		Drops:          snap.Drops,
		BytesIn:        snap.Traffic.InBytes,
		BytesOut:       snap.Traffic.OutBytes,
		PacketsIn:      snap.Traffic.InPackets,
		PacketsOut:     snap.Traffic.OutPackets,
		UptimeSeconds:  int64(snap.Uptime.Seconds()),
		Panics:         snap.Panics,
		ReadErrors:     snap.ReadErrors,
		DTLSFallback:   snap.DTLSFallback,
	}
	for t, n := range snap.Sessions {
		st.Sessions += n
		if t != TransportNone {
			st.Connected += n
		}
	}
	return st
}

// noSession is the error for a user without sessions; it says whether the
// name is in the password file at all, since a typo is the usual cause.
func (s *Server) noSession(user string) ctl.Reply {
	if _, ok := s.currentSettings().Passwd.Group(user); !ok && s.cfg.passwordAuth() {
		return ctl.Errorf("unknown user %q (not in the password file, no session)", user)
	}
	return ctl.Errorf("user %q has no session", user)
}

package radius

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"sync"
	"time"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
)

// TerminateCause is an Acct-Terminate-Cause (RFC 2866 5.10).
type TerminateCause = rfc2866.AcctTerminateCause

// Causes vpnd reports.
const (
	CauseUserRequest    = rfc2866.AcctTerminateCause_Value_UserRequest
	CauseLostCarrier    = rfc2866.AcctTerminateCause_Value_LostCarrier
	CauseIdleTimeout    = rfc2866.AcctTerminateCause_Value_IdleTimeout
	CauseSessionTimeout = rfc2866.AcctTerminateCause_Value_SessionTimeout
	CauseAdminReset     = rfc2866.AcctTerminateCause_Value_AdminReset
	CauseNASError       = rfc2866.AcctTerminateCause_Value_NASError
	CauseNASRequest     = rfc2866.AcctTerminateCause_Value_NASRequest
	CauseNASReboot      = rfc2866.AcctTerminateCause_Value_NASReboot
	CausePortPreempted  = rfc2866.AcctTerminateCause_Value_PortPreempted
)

// Usage is what a session carried; "in" is from the client (Acct-Input).
type Usage struct {
	InOctets, OutOctets, InPackets, OutPackets uint64
}

// SessionInfo describes a session to account for.
type SessionInfo struct {
	User             string
	FramedIP         netip.Addr
	CallingStationID string
	Class            [][]byte
	// MultiSessionID links the parts of one session (Acct-Multi-Session-Id):
	// the same on every node that resumes it.
	MultiSessionID string
	// Interim overrides the configured interval (Settings.Interim).
	Interim time.Duration
	// Usage reads the session's counters; called from the accounting
	// goroutines, never from the data path.
	Usage func() Usage
}

// acctAttempts is how many rounds (each over every server with its
// retries) a record gets before it is dropped.
const acctAttempts = 3

// record is an accounting record waiting to be sent.
type record struct {
	status   rfc2866.AcctStatusType
	sess     *AcctSession
	usage    Usage
	at       time.Time // the event's time (Acct-Delay-Time counts from it)
	cause    TerminateCause
	attempts int
}

// Accounting sends accounting records from a bounded queue in its own
// goroutine. Start, interims and Stop only enqueue: the data path and the
// login never wait for a RADIUS server.
type Accounting struct {
	c      *Client
	queue  chan *record
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	stop   chan struct{}
}

// NewAccounting starts the accounting sender.
func NewAccounting(c *Client) *Accounting {
	a := &Accounting{c: c, queue: make(chan *record, c.cfg.AcctQueue), stop: make(chan struct{})}
	a.wg.Add(1)
	go a.run()
	return a
}

// AcctSession is one accounted session.
type AcctSession struct {
	a       *Accounting
	info    SessionInfo
	id      string
	start   time.Time
	mu      sync.Mutex
	stopped bool
	timer   *time.Timer
}

// ID is the Acct-Session-Id.
func (s *AcctSession) ID() string { return s.id }

// NewSessionID returns a fresh Acct-Session-Id: 16 random hex digits,
// unique across nodes without coordination.
func NewSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start sends Accounting Start for a session whose tunnel is up and
// schedules its Interim-Updates.
func (a *Accounting) Start(info SessionInfo) *AcctSession {
	s := &AcctSession{a: a, info: info, id: NewSessionID(), start: time.Now()}
	a.enqueue(&record{status: rfc2866.AcctStatusType_Value_Start, sess: s, at: s.start})
	if iv := s.interim(); iv > 0 {
		// Under s.mu: the first tick (which resets s.timer) waits until
		// the timer is stored.
		s.mu.Lock()
		s.timer = time.AfterFunc(iv, s.tick)
		s.mu.Unlock()
	}
	return s
}

func (s *AcctSession) interim() time.Duration {
	if s.info.Interim > 0 {
		return s.info.Interim
	}
	return s.a.c.cfg.Interim
}

// tick queues an Interim-Update and schedules the next.
func (s *AcctSession) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.a.enqueue(&record{status: rfc2866.AcctStatusType_Value_InterimUpdate, sess: s, usage: s.usage(), at: time.Now()})
	s.timer.Reset(s.interim())
}

func (s *AcctSession) usage() Usage {
	if s.info.Usage == nil {
		return Usage{}
	}
	return s.info.Usage()
}

// Stop sends Accounting Stop with cause; later calls do nothing.
func (s *AcctSession) Stop(cause TerminateCause) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.a.enqueue(&record{status: rfc2866.AcctStatusType_Value_Stop, sess: s, usage: s.usage(), at: time.Now(), cause: cause})
}

// enqueue adds r without blocking; a full queue drops it (counted).
func (a *Accounting) enqueue(r *record) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		a.c.Counters.AcctDropped.Add(1)
		return false
	}
	select {
	case a.queue <- r:
		return true
	default:
		n := a.c.Counters.AcctQueueFull.Add(1)
		a.c.log.Warn("RADIUS accounting queue full; record dropped", "status", r.status.String(),
			"user", r.sess.info.User, "acct-session-id", r.sess.id, "queue", cap(a.queue), "dropped", n)
		return false
	}
}

// run sends the queued records one at a time, in order, until Close
// closes the queue; after stop it drops what is left.
func (a *Accounting) run() {
	defer a.wg.Done()
	for r := range a.queue {
		select {
		case <-a.stop:
			a.c.Counters.AcctDropped.Add(1)
			continue
		default:
		}
		a.send(r)
	}
}

// send sends r; a record no server answered goes back to the queue's end
// until it has had acctAttempts rounds.
func (a *Accounting) send(r *record) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-a.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	p := a.packet(r)
	_, _, err := a.c.exchange(ctx, p, a.c.cfg.Acct, &a.c.prefAcct)
	if err == nil {
		a.c.Counters.AcctSent.Add(1)
		return
	}
	r.attempts++
	log := a.c.log.With("status", r.status.String(), "user", r.sess.info.User, "acct-session-id", r.sess.id, "err", err)
	if r.attempts >= acctAttempts || ctx.Err() != nil {
		a.c.Counters.AcctDropped.Add(1)
		log.Error("RADIUS accounting record dropped: no accounting server answered", "attempts", r.attempts)
		return
	}
	a.c.Counters.AcctRetried.Add(1)
	log.Warn("RADIUS accounting record not answered; queued again", "attempts", r.attempts)
	a.enqueue(r)
}

// packet builds the Accounting-Request for r.
func (a *Accounting) packet(r *record) *layeh.Packet {
	s := r.sess
	p := layeh.New(layeh.CodeAccountingRequest, a.c.cfg.Secret)
	rfc2866.AcctStatusType_Set(p, r.status)
	rfc2866.AcctSessionID_SetString(p, s.id)
	if s.info.MultiSessionID != "" {
		rfc2866.AcctMultiSessionID_SetString(p, s.info.MultiSessionID)
	}
	rfc2865.UserName_SetString(p, s.info.User)
	a.c.addNAS(p)
	rfc2865.NASPortType_Set(p, rfc2865.NASPortType_Value_Virtual)
	rfc2865.ServiceType_Set(p, rfc2865.ServiceType_Value_FramedUser)
	rfc2865.FramedProtocol_Set(p, rfc2865.FramedProtocol_Value_PPP)
	if s.info.CallingStationID != "" {
		rfc2865.CallingStationID_SetString(p, s.info.CallingStationID)
	}
	if s.info.FramedIP.IsValid() && s.info.FramedIP.Is4() {
		rfc2865.FramedIPAddress_Set(p, net.IP(s.info.FramedIP.AsSlice()))
	}
	for _, c := range s.info.Class {
		rfc2865.Class_Add(p, c)
	}
	rfc2866.AcctAuthentic_Set(p, rfc2866.AcctAuthentic_Value_RADIUS)
	rfc2866.AcctDelayTime_Set(p, rfc2866.AcctDelayTime(time.Since(r.at)/time.Second))
	rfc2869.EventTimestamp_Set(p, r.at)
	if r.status != rfc2866.AcctStatusType_Value_Start {
		u := r.usage
		rfc2866.AcctSessionTime_Set(p, rfc2866.AcctSessionTime(r.at.Sub(s.start)/time.Second))
		rfc2866.AcctInputOctets_Set(p, rfc2866.AcctInputOctets(uint32(u.InOctets)))
		rfc2866.AcctOutputOctets_Set(p, rfc2866.AcctOutputOctets(uint32(u.OutOctets)))
		rfc2869.AcctInputGigawords_Set(p, rfc2869.AcctInputGigawords(u.InOctets>>32))
		rfc2869.AcctOutputGigawords_Set(p, rfc2869.AcctOutputGigawords(u.OutOctets>>32))
		rfc2866.AcctInputPackets_Set(p, rfc2866.AcctInputPackets(uint32(min(u.InPackets, 1<<32-1))))
		rfc2866.AcctOutputPackets_Set(p, rfc2866.AcctOutputPackets(uint32(min(u.OutPackets, 1<<32-1))))
	}
	if r.status == rfc2866.AcctStatusType_Value_Stop {
		rfc2866.AcctTerminateCause_Set(p, r.cause)
	}
	return p
}

// Close stops taking records and sends those queued until ctx ends;
// what is left then is dropped (counted).
func (a *Accounting) Close(ctx context.Context) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	close(a.queue)
	a.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	close(a.stop)
	<-done
	a.c.log.Warn("RADIUS accounting: shutdown deadline reached; records not sent were dropped",
		"dropped", a.c.Counters.AcctDropped.Load())
}

package loadgen

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Failure reasons. Each failed session is counted under exactly one.
const (
	FailTLSDial        = "tls-dial"
	FailAddrNotAvail   = "eaddrnotavail" // out of ephemeral ports or a bad --local-addr
	FailFileLimit      = "emfile"        // RLIMIT_NOFILE reached (two sockets a session)
	FailTLSHandshake   = "tls-handshake"
	FailLoginRefused   = "login-refused" // + "(HTTP nnn)" or "(password)"
	FailLoginError     = "login-error"
	FailConnectRefused = "connect-refused" // + "(HTTP nnn)"
	FailConnectError   = "connect-error"
	FailDTLSHandshake  = "dtls-handshake" // the session goes on over TLS
	FailDTLSLost       = "dtls-lost"      // the session goes on over TLS
	FailDPDTimeout     = "dpd-timeout"
	FailServerClosed   = "server-closed" // DISCONNECT, TERMINATE or EOF from the server
	FailReadError      = "read-error"
	FailProtocol       = "protocol-error"
)

// Stats are a run's live counters. Gauges go up and down; the rest only
// grow.
type Stats struct {
	Up        atomic.Int64 // sessions with a tunnel
	LoggingIn atomic.Int64 // dial to CONNECT answer, in flight
	DTLSUp    atomic.Int64
	MaxUp     atomic.Int64

	Logins   atomic.Uint64 // cookies received
	Connects atomic.Uint64 // tunnels up
	DTLSOK   atomic.Uint64 // DTLS handshakes that succeeded
	// DTLSNotOffered counts CONNECT answers without a DTLS offer the
	// generator can use (no port, App-ID or PSK-NEGOTIATE) while DTLS
	// was wanted.
	DTLSNotOffered atomic.Uint64
	Disconnects    atomic.Uint64 // DISCONNECT sent by us
	Churned        atomic.Uint64 // sessions ended by --churn

	TxPackets, TxBytes atomic.Uint64
	RxPackets, RxBytes atomic.Uint64
	EchoReplies        atomic.Uint64
	DPDAnswered        atomic.Uint64 // DPD requests from the server answered on TLS

	Login, Connect, DTLS, RTT Histogram

	mu       sync.Mutex
	failures map[string]uint64
}

func (s *Stats) fail(reason string) {
	s.mu.Lock()
	if s.failures == nil {
		s.failures = map[string]uint64{}
	}
	s.failures[reason]++
	s.mu.Unlock()
}

// Failures returns a copy of the failure counts by reason.
func (s *Stats) Failures() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.failures))
	for k, v := range s.failures {
		out[k] = v
	}
	return out
}

// failureTotal counts failures that ended a session or its login (DTLS
// failures leave the session up on TLS and are not in it).
func (s *Stats) failureTotal() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for k, v := range s.failures {
		if k != FailDTLSHandshake && k != FailDTLSLost {
			n += v
		}
	}
	return n
}

func sortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (s *Stats) up() {
	n := s.Up.Add(1)
	for {
		m := s.MaxUp.Load()
		if n <= m || s.MaxUp.CompareAndSwap(m, n) {
			return
		}
	}
}

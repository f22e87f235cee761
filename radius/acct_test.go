package radius

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
)

func TestAccounting(t *testing.T) {
	ts := startServer(t, accept(nil))
	c := testClient(t, ts.addr)
	a := NewAccounting(c)
	var usage atomic.Pointer[Usage]
	usage.Store(&Usage{InOctets: 5<<32 + 7, OutOctets: 1000, InPackets: 3, OutPackets: 4})
	s := a.Start(SessionInfo{User: "alice", FramedIP: netip.MustParseAddr("10.77.0.9"), CallingStationID: "192.0.2.1",
		Class: [][]byte{[]byte("OU=x;")}, MultiSessionID: "m1", Usage: func() Usage { return *usage.Load() }})
	time.Sleep(1300 * time.Millisecond) // one interim (interim-interval 1)
	s.Stop(CauseUserRequest)
	a.Close(context.Background())
	var start, interim, stop *layeh.Packet
	for _, p := range ts.requests() {
		switch rfc2866.AcctStatusType_Get(p) {
		case rfc2866.AcctStatusType_Value_Start:
			start = p
		case rfc2866.AcctStatusType_Value_InterimUpdate:
			interim = p
		case rfc2866.AcctStatusType_Value_Stop:
			stop = p
		}
	}
	if start == nil || interim == nil || stop == nil {
		t.Fatalf("start %v interim %v stop %v", start != nil, interim != nil, stop != nil)
	}
	for _, p := range []*layeh.Packet{start, interim, stop} {
		if rfc2866.AcctSessionID_GetString(p) != s.ID() || string(rfc2865.Class_Get(p)) != "OU=x;" ||
			rfc2865.FramedIPAddress_Get(p).String() != "10.77.0.9" || rfc2865.UserName_GetString(p) != "alice" {
			t.Fatalf("record attributes %v", p.Attributes)
		}
	}
	if rfc2866.AcctInputOctets_Get(stop) != 7 || rfc2869.AcctInputGigawords_Get(stop) != 5 ||
		rfc2866.AcctOutputOctets_Get(stop) != 1000 || rfc2866.AcctInputPackets_Get(stop) != 3 ||
		rfc2866.AcctOutputPackets_Get(stop) != 4 || rfc2866.AcctTerminateCause_Get(stop) != CauseUserRequest {
		t.Fatalf("stop %v", stop.Attributes)
	}
	if c.Counters.AcctSent.Load() < 3 {
		t.Fatalf("sent %d", c.Counters.AcctSent.Load())
	}
}

// TestAccountingNeverBlocks: with no server answering, Start and Stop
// return at once, a full queue drops (counted), and Close gives up at
// its deadline.
func TestAccountingNeverBlocks(t *testing.T) {
	c := testClient(t, silent(t))
	c.cfg.AcctQueue = 2
	c.cfg.Interim = 0
	a := NewAccounting(c)
	start := time.Now()
	for range 10 {
		a.Start(SessionInfo{User: "u"}).Stop(CauseNASReboot)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("enqueueing took %s", d)
	}
	if c.Counters.AcctQueueFull.Load() == 0 {
		t.Fatal("no record dropped at a full queue")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	a.Close(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s", d)
	}
}

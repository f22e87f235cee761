package auth

import (
	"net/netip"
	"testing"
	"time"
)

func TestBans(t *testing.T) {
	clock := newFakeClock()
	b := NewBans(80, 10, 1200*time.Second, clock.Now)
	for i := range 7 {
		if b.WrongPassword(addr1) {
			t.Fatalf("banned after %d wrong passwords", i+1)
		}
	}
	if ok, _ := b.Banned(addr1); ok {
		t.Fatal("banned at 70 points")
	}
	if !b.WrongPassword(addr1) {
		t.Fatal("8th wrong password did not ban")
	}
	if b.WrongPassword(addr1) {
		t.Fatal("ban reported twice")
	}
	clock.Advance(200 * time.Second)
	if ok, left := b.Banned(addr1); !ok || left != 1000*time.Second {
		t.Fatalf("Banned = %v, %v; want true, 1000s", ok, left)
	}
	if ok, _ := b.Banned(addr2); ok {
		t.Fatal("another address banned")
	}
	// The same /64 is one address.
	v6 := netip.MustParseAddr("2001:db8::1")
	for range 8 {
		b.WrongPassword(v6)
	}
	if ok, _ := b.Banned(netip.MustParseAddr("2001:db8::ffff")); !ok {
		t.Fatal("same /64 not banned")
	}
	clock.Advance(1000 * time.Second)
	if ok, _ := b.Banned(addr1); ok {
		t.Fatal("ban outlived ban-reset-time")
	}
	// Zero disables.
	off := NewBans(0, 10, time.Hour, clock.Now)
	for range 100 {
		off.WrongPassword(addr1)
	}
	if ok, _ := off.Banned(addr1); ok || off.Enabled() {
		t.Fatal("max-ban-score 0 banned")
	}
}

// TestBansMinReauth: with min-reauth-time, a ban lasts that long from the
// point that reached max-ban-score, each further point starts it again,
// and the score resets ban-reset-time after its first point.
func TestBansMinReauth(t *testing.T) {
	clock := newFakeClock()
	b := NewBansConfig(BanConfig{MaxScore: 80, ResetTime: 1200 * time.Second, MinReauth: 300 * time.Second,
		WrongPassword: 10, Connection: 1, MalformedRequest: 10}, clock.Now)
	for i := range 7 {
		if b.Malformed(addr1) {
			t.Fatalf("banned after %d malformed requests", i+1)
		}
	}
	if !b.Malformed(addr1) {
		t.Fatal("8th malformed request did not ban")
	}
	clock.Advance(200 * time.Second)
	if ok, left := b.Banned(addr1); !ok || left != 100*time.Second {
		t.Fatalf("Banned = %v, %v; want true, 100s", ok, left)
	}
	clock.Advance(101 * time.Second)
	if ok, _ := b.Banned(addr1); ok {
		t.Fatal("ban outlived min-reauth-time")
	}
	// The score is still at max-ban-score: one more point bans again.
	if !b.Connection(addr1) {
		t.Fatal("a point over max-ban-score after the ban did not ban again")
	}
	clock.Advance(299 * time.Second)
	if ok, _ := b.Banned(addr1); !ok {
		t.Fatal("second ban too short")
	}
	// 1200 s after the first point the score would reset; the ban in
	// force runs its course, then the address is clean.
	clock.Advance(2 * time.Second)
	if ok, _ := b.Banned(addr1); ok {
		t.Fatal("second ban outlived min-reauth-time")
	}
	clock.Advance(700 * time.Second)
	if l := b.List(); len(l) != 0 {
		t.Fatalf("scores kept after the reset: %+v", l)
	}
}

// TestBansPerUserCap: one username's wrong passwords never ban an
// address (users behind one NAT), several names do.
func TestBansPerUserCap(t *testing.T) {
	clock := newFakeClock()
	b := NewBansConfig(BanConfig{MaxScore: 80, ResetTime: 1200 * time.Second, MinReauth: 300 * time.Second,
		WrongPassword: 10}, clock.Now)
	for range 50 {
		if b.WrongPasswordFor(addr1, "alice") {
			t.Fatal("one user's typos banned the address")
		}
	}
	if l := b.List(); len(l) != 1 || l[0].Score != 40 || l[0].Banned {
		t.Fatalf("scores: %+v, want 40 points, not banned", l)
	}
	for i := range 3 {
		if b.WrongPasswordFor(addr1, "bob") {
			t.Fatalf("banned after alice's cap and %d of bob's", i+1)
		}
	}
	if !b.WrongPasswordFor(addr1, "bob") {
		t.Fatal("two users' failures (80 points) did not ban")
	}
}

// TestBansConnectionsListUnban: connections cost a point each; List
// shows the scores; unban forgets a score.
func TestBansConnectionsListUnban(t *testing.T) {
	clock := newFakeClock()
	b := NewBansConfig(BanConfig{MaxScore: 80, ResetTime: 1200 * time.Second, MinReauth: 300 * time.Second,
		Connection: 1}, clock.Now)
	b.Connection(addr1)
	for i := range 80 {
		if now := b.Connection(addr2); now != (i == 79) {
			t.Fatalf("connection %d: nowBanned %v", i+1, now)
		}
	}
	l := b.List()
	if len(l) != 2 || l[0].Addr != addrKey(addr2) || !l[0].Banned || l[0].Score != 80 || l[1].Banned {
		t.Fatalf("List: %+v", l)
	}
	if !b.Unban(addr2) || b.Unban(addr2) {
		t.Fatal("Unban did not report the score once")
	}
	if ok, _ := b.Banned(addr2); ok {
		t.Fatal("banned after Unban")
	}
}

// NewBans returns, for the tests, an empty table with ocserv's semantics for max-ban-score
// and ban-reset-time, points only for wrong passwords and no
// min-reauth-time (banned until the score resets). now is the clock,
// time.Now if nil.
func NewBans(maxScore, pointsWrongPassword int, resetTime time.Duration, now func() time.Time) *Bans {
	return NewBansConfig(BanConfig{MaxScore: maxScore, WrongPassword: pointsWrongPassword, ResetTime: resetTime}, now)
}

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

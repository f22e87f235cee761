package auth

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	addr1 = netip.MustParseAddr("192.0.2.1")
	addr2 = netip.MustParseAddr("192.0.2.2")
)

// mustAllow fails the test unless Allow answers ok with no wait.
func mustAllow(t *testing.T, th *Throttle, user string, addr netip.Addr) {
	t.Helper()
	if ok, wait := th.Allow(user, addr); !ok || wait != 0 {
		t.Fatalf("Allow(%q, %v) = %v, %v; want allowed", user, addr, ok, wait)
	}
}

// mustWait fails the test unless Allow refuses with exactly want to wait.
func mustWait(t *testing.T, th *Throttle, user string, addr netip.Addr, want time.Duration) {
	t.Helper()
	if ok, wait := th.Allow(user, addr); ok || wait != want {
		t.Fatalf("Allow(%q, %v) = %v, %v; want refused for %v", user, addr, ok, wait, want)
	}
}

func TestDelayAfter(t *testing.T) {
	want := []time.Duration{0, 0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for n, d := range want {
		if got := delayAfter(n, freeFailures); got != d {
			t.Errorf("delayAfter(%d) = %v, want %v", n, got, d)
		}
	}
	for _, n := range []int{12, 13, 40, 1 << 30} {
		if got := delayAfter(n, freeFailures); got != maxDelay {
			t.Errorf("delayAfter(%d) = %v, want %v", n, got, maxDelay)
		}
	}
}

func TestThrottleBackoff(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)

	// Three failures are free.
	for range freeFailures {
		mustAllow(t, th, "alice", addr1)
		th.Fail("alice", addr1)
	}
	// Then each attempt waits 1s, 2s, 4s, ...
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		mustWait(t, th, "alice", addr1, d)
		clock.Advance(d / 2)
		mustWait(t, th, "alice", addr1, d/2)
		clock.Advance(d / 2)
		mustAllow(t, th, "alice", addr1)
		th.Fail("alice", addr1)
	}
	// ... up to the cap.
	for range 20 {
		clock.Advance(maxDelay)
		mustAllow(t, th, "alice", addr1)
		th.Fail("alice", addr1)
	}
	mustWait(t, th, "alice", addr1, maxDelay)
}

func TestThrottleReservesSlot(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures {
		th.Fail("alice", addr1)
	}
	clock.Advance(time.Second)
	mustAllow(t, th, "alice", addr1)
	// A second attempt racing the first must wait its turn.
	mustWait(t, th, "alice", addr1, time.Second)
}

func TestThrottleKeysIndependent(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures {
		th.Fail("alice", addr1)
	}
	// addr1 is throttled for anyone; alice from elsewhere is not (her
	// count from all addresses has far more free failures).
	mustWait(t, th, "alice", addr1, time.Second)
	mustWait(t, th, "bob", addr1, time.Second)
	mustAllow(t, th, "bob", addr2)
	th.Abandon("bob", addr2)
	mustAllow(t, th, "alice", addr2)
	th.Abandon("alice", addr2)

	// A success clears the pair's count but not the address's.
	th.Succeed("alice", addr1)
	mustAllow(t, th, "alice", addr2)
	th.Abandon("alice", addr2)
	mustWait(t, th, "alice", addr1, time.Second)
}

func TestThrottleTakesLongerWait(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures + 2 { // pair alice@addr1 and addr1: 4s
		th.Fail("alice", addr1)
	}
	for range freeFailures { // address 2: 1s
		th.Fail("bob", addr2)
	}
	mustWait(t, th, "alice", addr1, 4*time.Second)
}

// TestThrottleInFlight: attempts in flight count like failures, so
// parallel attempts on a fresh key cannot all reach the password check
// (before the fix every one of them was allowed).
func TestThrottleInFlight(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	allowed := 0
	for range 150 {
		if ok, _ := th.Allow("alice", addr1); ok {
			allowed++
		}
	}
	if allowed != freeFailures {
		t.Fatalf("%d parallel attempts allowed on a fresh key, want %d", allowed, freeFailures)
	}
	// Many users from one address: the address's count holds them.
	allowed = 0
	for i := range 200 {
		if ok, _ := th.Allow("u"+strconv.Itoa(i), addr2); ok {
			allowed++
		}
	}
	if allowed != freeFailures {
		t.Fatalf("%d parallel attempts allowed from one address, want %d", allowed, freeFailures)
	}
	// Abandoned attempts cost nothing: the slots come back.
	for i := range freeFailures {
		th.Abandon("u"+strconv.Itoa(i), addr2)
	}
	mustAllow(t, th, "bob", addr2)
	th.Abandon("bob", addr2)
	// Past the free failures, one attempt at a time, after the delay.
	for range freeFailures {
		th.Fail("alice", addr1)
	}
	clock.Advance(time.Second)
	mustAllow(t, th, "alice", addr1)
	mustWait(t, th, "alice", addr1, time.Second)
}

// TestThrottleNoTargetedLockout: a guesser failing for alice from many
// addresses slows guessing at alice everywhere, but not alice at an
// address she logged in from; and one address's failures never hold her
// elsewhere (before the fix, three failures anywhere locked her out
// everywhere, for up to 5 minutes).
func TestThrottleNoTargetedLockout(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	home := netip.MustParseAddr("198.51.100.7")
	mustAllow(t, th, "alice", home)
	th.Succeed("alice", home)
	for i := range userFreeFailures + 5 {
		a := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		th.Fail("alice", a)
	}
	// A new address waits for the user's count...
	if ok, _ := th.Allow("alice", netip.MustParseAddr("192.0.2.200")); ok {
		t.Fatal("distributed guessing not slowed")
	}
	// ...but alice's own address does not.
	mustAllow(t, th, "alice", home)
	th.Succeed("alice", home)
	// The trust ends with its lifetime.
	clock.Advance(trustFor)
	for i := range userFreeFailures + 5 {
		a := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		th.Fail("alice", a)
	}
	if ok, _ := th.Allow("alice", home); ok {
		t.Fatal("trust outlived trustFor")
	}
}

func TestThrottleForgets(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures + 5 {
		th.Fail("alice", addr1)
	}
	// Just short of forgetAfter, the count still stands.
	clock.Advance(forgetAfter - time.Nanosecond)
	mustAllow(t, th, "alice", addr1)
	th.Fail("alice", addr1)
	mustWait(t, th, "alice", addr1, delayAfter(freeFailures+6, freeFailures))

	// forgetAfter after the latest failure, it is gone, and the free
	// failures are available again.
	clock.Advance(forgetAfter)
	for range freeFailures {
		mustAllow(t, th, "alice", addr1)
		th.Fail("alice", addr1)
	}
	mustWait(t, th, "alice", addr1, baseDelay)
	if n := th.users.order.Len() + th.addrs.order.Len(); n != 2 {
		t.Errorf("%d entries, want 2", n)
	}
}

func TestThrottleAddressKeys(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	v6a := netip.MustParseAddr("2001:db8:1:2::1")
	v6b := netip.MustParseAddr("2001:db8:1:2:ffff::9") // same /64
	v6c := netip.MustParseAddr("2001:db8:1:3::1")      // next /64
	for i := range freeFailures {
		th.Fail("u"+strconv.Itoa(i), v6a)
	}
	mustWait(t, th, "x", v6b, time.Second)
	mustAllow(t, th, "x", v6c)

	// IPv4 and IPv4-mapped IPv6 are the same host.
	for i := range freeFailures {
		th.Fail("v"+strconv.Itoa(i), addr1)
	}
	mustWait(t, th, "x", netip.MustParseAddr("::ffff:192.0.2.1"), time.Second)
	mustAllow(t, th, "x", addr2)
}

func TestThrottleBounded(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures {
		th.Fail("victim", addr1)
	}
	// A flood of distinct users and addresses cannot grow the tables past
	// the bound; the oldest entries go first.
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range maxThrottleKeys + 100 {
		a := base
		a[1], a[2], a[3] = byte(i>>16), byte(i>>8), byte(i)
		th.Fail("flood"+strconv.Itoa(i), netip.AddrFrom4(a))
	}
	if n := th.users.order.Len(); n != maxThrottleKeys || len(th.users.byKey) != n {
		t.Errorf("user table has %d entries, map %d", n, len(th.users.byKey))
	}
	if n := th.addrs.order.Len(); n != maxThrottleKeys || len(th.addrs.byKey) != n {
		t.Errorf("address table has %d entries, map %d", n, len(th.addrs.byKey))
	}
	mustAllow(t, th, "victim", addr1) // evicted
}

func TestThrottleLongUser(t *testing.T) {
	th := NewThrottle(newFakeClock().Now)
	long := string(make([]byte, 1<<20))
	th.Fail(long, addr1)
	for k := range th.users.byKey {
		if len(k) > maxUserKeyLen {
			t.Errorf("key of %d bytes stored", len(k))
		}
	}
}

// TestThrottleConcurrent: attempts from many goroutines at once (run it
// under -race) leave nothing in flight once each is resolved.
func TestThrottleConcurrent(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	var wg sync.WaitGroup
	var allowed, refused atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(g)})
			for i := range 500 {
				user := "u" + strconv.Itoa(i%7)
				ok, _ := th.Allow(user, addr)
				switch {
				case !ok:
					refused.Add(1)
				case i%3 == 0:
					allowed.Add(1)
					th.Succeed(user, addr)
				default:
					allowed.Add(1)
					th.Fail(user, addr)
				}
				if i%100 == 0 {
					clock.Advance(time.Minute)
				}
			}
		})
	}
	wg.Wait()
	if allowed.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("allowed %d, refused %d: the load should meet both", allowed.Load(), refused.Load())
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	for name, n := range map[string]int{"pairs": inflight(&th.pairs), "users": inflight(&th.users), "addresses": inflight(&th.addrs)} {
		if n != 0 {
			t.Errorf("%d attempts still in flight in the %s table after every attempt resolved", n, name)
		}
	}
}

// inflight sums the attempts in flight over a table's entries.
func inflight[K comparable](tt *throttleTable[K]) int {
	n := 0
	for _, el := range tt.byKey {
		n += el.Value.(*throttleEntry[K]).inflight
	}
	return n
}

// TestThrottleWait: an attempt held back only by attempts in flight waits
// for them: it goes ahead when one is abandoned or succeeds, and is
// refused at once for their failures.
func TestThrottleWait(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures {
		mustAllow(t, th, "u", addr1)
	}
	got := make(chan bool, 1)
	go func() {
		ok, _ := th.Wait(context.Background(), "v", addr1)
		got <- ok
	}()
	select {
	case <-got:
		t.Fatal("4th attempt did not wait")
	case <-time.After(20 * time.Millisecond):
	}
	th.Succeed("u", addr1)
	if !<-got {
		t.Fatal("waiting attempt refused after one in flight succeeded")
	}
	// Now three in flight again (two left plus v); they all fail: a
	// waiter is refused for the failures, not left waiting.
	go func() {
		ok, _ := th.Wait(context.Background(), "w", addr1)
		got <- ok
	}()
	time.Sleep(10 * time.Millisecond)
	th.Fail("u", addr1)
	th.Fail("u", addr1)
	th.Fail("v", addr1)
	select {
	case ok := <-got:
		if ok {
			t.Fatal("allowed past three failures")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
	// A waiter gives up when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	clock.Advance(time.Second)
	mustAllow(t, th, "x", addr1)
	if ok, wait := th.Wait(ctx, "y", addr1); ok || wait != time.Second {
		t.Fatalf("Wait past its context = %v, %v", ok, wait)
	}
}

// TestThrottleWaitFIFO: attempts held back by attempts in flight go ahead
// in the order they came: each resolved attempt lets the oldest waiter
// through (a broadcast let any of them win, and behind a busy NAT address
// one unlucky login could wait out its whole login timeout).
func TestThrottleWaitFIFO(t *testing.T) {
	clock := newFakeClock()
	th := NewThrottle(clock.Now)
	for range freeFailures {
		mustAllow(t, th, "u", addr1)
	}
	const waiters = 20
	order := make(chan int, waiters)
	for i := range waiters {
		go func() {
			if ok, _ := th.Wait(context.Background(), "u", addr1); ok {
				order <- i
			} else {
				order <- -1
			}
		}()
		// The next waiter starts only once this one waits.
		for {
			th.mu.Lock()
			n := len(th.waiters)
			th.mu.Unlock()
			if n == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	for want := range waiters {
		th.Succeed("u", addr1) // resolves one attempt in flight
		if got := <-order; got != want {
			t.Fatalf("attempt %d went ahead as number %d: waiters are not served in order", got, want)
		}
	}
}

package ktlsbridge

import (
	"testing"
	"time"
)

// TestUserRXReleasesBuffer: the userspace receive buffer (two maximal
// records, 33 KiB) is held only while it holds bytes not yet returned: an
// idle connection holds none, before and after traffic, and WaitRead
// waits for the socket without taking one.
func TestUserRXReleasesBuffer(t *testing.T) {
	srv, cli := pair(t, variants[0], mode(ModeOff), mode(ModeOff))
	s := srv.(*Conn)
	rx := s.rx.(*userRX)
	if rx.bufp != nil {
		t.Fatal("buffer held before anything was read")
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitRead() }()
	select {
	case err := <-done:
		t.Fatalf("WaitRead returned on a silent connection: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	msg := payload(40000, 3) // three records
	go cli.Write(msg)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rx.bufp != nil {
		t.Fatal("WaitRead took a buffer")
	}
	p := make([]byte, 64<<10)
	for got := 0; got < len(msg); {
		n, err := s.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if rx.bufp != nil {
		t.Fatalf("buffer held after everything was read (r %d, w %d, pending %d)", rx.r, rx.w, len(rx.pend))
	}
	// A record in part keeps it until the rest arrives.
	rec := payload(100, 4)
	go cli.Write(rec)
	if n, err := s.Read(p); err != nil || n != len(rec) {
		t.Fatalf("read %d, %v", n, err)
	}
	if rx.bufp != nil {
		t.Fatal("buffer held after a small record was read")
	}
}

// TestWriteScratchNotKept: Write's copy goes into a pooled buffer for the
// call only, so a connection does not keep its largest write's size.
func TestWriteScratchNotKept(t *testing.T) {
	srv, cli := pair(t, variants[0], mode(ModeOff), mode(ModeOff))
	errc := make(chan error, 1)
	msg := payload(3*MaxPlaintext, 5)
	go func() { errc <- writeAll(srv, msg) }()
	p := make([]byte, len(msg))
	for got := 0; got < len(msg); {
		n, err := cli.Read(p[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A buffer per call (make, as before the pool, once it grew) would
	// be one allocation of 16 KiB; the pooled one is none.
	n := testing.AllocsPerRun(50, func() { srv.Write(msg[:100]) })
	t.Logf("%v allocations per Write", n)
	if n >= 1 {
		t.Errorf("Write allocates %v per call", n)
	}
}

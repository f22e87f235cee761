package ktlsbridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"kvpn/record"
)

// TestNegativeControls: a sequence number off by one or a wrong key must
// break the connection, whichever engine runs, so a broken key path can
// never pass silently.
func TestNegativeControls(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(tx, rx *Keys)
		// writer says which side sends: the mangled one (its TX is wrong,
		// the reference peer must reject) or the peer (our RX is wrong).
		mangledSends bool
	}{
		{"tx-seq+1", func(tx, rx *Keys) { tx.Seq++ }, true},
		{"tx-key", func(tx, rx *Keys) { tx.Key = bytes.Repeat([]byte{0x42}, len(tx.Key)) }, true},
		{"rx-seq+1", func(tx, rx *Keys) { rx.Seq++ }, false},
		{"rx-key", func(tx, rx *Keys) { rx.Key = bytes.Repeat([]byte{0x42}, len(rx.Key)) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testHookKeys.Store(&tc.mangle)
			defer testHookKeys.Store(nil)
			ours, ref := pair(t, variants[0], mode(ModeAuto), nil) // ours is the server
			testHookKeys.Store(nil)
			var sender, receiver end = ref, ours
			if tc.mangledSends {
				sender, receiver = ours, ref
			}
			go sender.Write([]byte("must not arrive"))
			receiver.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			n, err := receiver.Read(buf)
			if err == nil {
				t.Fatalf("read %q through mangled keys", buf[:n])
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no error, only a timeout: %v", err)
			}
			t.Logf("rejected as expected: %v", err)
		})
	}
}

// TestBadRecordSendsAlert: a record the userspace engine refuses makes it
// send the fatal alert for the error (here bad_record_mac), so a stock peer
// learns why instead of seeing a silent close.
func TestBadRecordSendsAlert(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			mangle := func(tx, rx *Keys) { rx.Key = bytes.Repeat([]byte{0x42}, len(rx.Key)) }
			testHookKeys.Store(&mangle)
			ours, ref := pair(t, v, mode(ModeOff), nil) // ours is the server
			testHookKeys.Store(nil)
			go ref.Write([]byte("refused"))
			ours.(*Conn).SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := ours.Read(make([]byte, 100)); !errors.Is(err, ErrBadRecordMAC) || !errors.Is(err, record.ErrCorrupt) {
				t.Fatalf("read: %v, want ErrBadRecordMAC", err)
			}
			ref.(*tls.Conn).SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := ref.Read(make([]byte, 100))
			if err == nil || !strings.Contains(err.Error(), "remote error: tls: bad record MAC") {
				t.Fatalf("peer read: %v, want the bad_record_mac alert", err)
			}
		})
	}
}

// TestGarbageAfterHandshake: bytes that are not a TLS record end the
// connection with a clear error.
func TestGarbageAfterHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	scfg, ccfg := configs(t, variants[0])
	errc := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		c, err := Server(context.Background(), raw, scfg, ModeAuto)
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 4096))
		errc <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, ccfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // plaintext where records belong
	err = <-errc
	if err == nil {
		t.Fatal("garbage accepted")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("garbage not detected, only a timeout: %v", err)
	}
	t.Logf("rejected: %v", err)
}

// TestCorruptIsMarked: a forged record surfaces as record.ErrCorrupt (the
// server ends such a session at once), a clean close as io.EOF.
func TestCorruptIsMarked(t *testing.T) {
	hook := func(tx, rx *Keys) { rx.Seq++ }
	testHookKeys.Store(&hook)
	ours, ref := pair(t, variants[0], mode(ModeAuto), nil)
	testHookKeys.Store(nil)
	go ref.Write([]byte("x"))
	_, err := ours.Read(make([]byte, 100))
	if !errors.Is(err, record.ErrCorrupt) {
		t.Fatalf("got %v, want record.ErrCorrupt", err)
	}
}

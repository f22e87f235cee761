package client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"kvpn/cstp"
	"kvpn/cstp/cstptest"
	"kvpn/internal/contain"
	"kvpn/netcfg"
	"kvpn/record/recordtest"
	"kvpn/session"
	"kvpn/tun"
	"kvpn/tun/tuntest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// failingTUN fails every read until closed, and counts them.
type failingTUN struct {
	reads  atomic.Int64
	closed atomic.Bool
}

func (d *failingTUN) Read([][]byte, []int, int) (int, error) {
	if d.closed.Load() {
		return 0, os.ErrClosed
	}
	d.reads.Add(1)
	return 0, errors.New("tun read: input/output error")
}
func (d *failingTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }
func (d *failingTUN) BatchSize() int                          { return 8 }
func (d *failingTUN) Name() string                            { return "failing0" }
func (d *failingTUN) MTU() int                                { return 1400 }
func (d *failingTUN) Close() error                            { d.closed.Store(true); return nil }

// TestDownlinkReadErrorsBackOff: a TUN device whose every read fails does
// not turn the client's downlink into a spin: its reads are paced by a
// backoff (a spin makes well over 10,000 in 200 ms), and each is counted.
func TestDownlinkReadErrorsBackOff(t *testing.T) {
	dev := &failingTUN{}
	tn := &tunnel{o: &Options{}, log: quietLog(), dev: dev, downDone: make(chan struct{})}
	go tn.downlink()
	time.Sleep(200 * time.Millisecond)
	reads := dev.reads.Load()
	dev.Close()
	select {
	case <-tn.downDone:
	case <-time.After(3 * time.Second):
		t.Fatal("the downlink did not return after the device closed")
	}
	t.Logf("%d failed reads in 200 ms", reads)
	if reads == 0 || reads >= 20 {
		t.Fatalf("%d failed reads in 200 ms: want a few (backoff from 1 ms), not 0 and not a spin", reads)
	}
	if n := tn.readErrors.Load(); n != uint64(dev.reads.Load()) {
		t.Fatalf("read errors counted %d, reads failed %d", n, dev.reads.Load())
	}
}

// TestPanicShutsTunnelDown: a panic in one of the client's goroutines
// (here the downlink, injected) ends the tunnel cleanly rather than the
// process: the server is told (DISCONNECT), what up changed (routes, DNS)
// is undone, the TUN device is closed, and serve returns the panic as an
// error with ExitTunnelLost.
func TestPanicShutsTunnelDown(t *testing.T) {
	dev, kernel := tuntest.NewPair()
	defer kernel.Close()
	var restored atomic.Bool
	changes := netcfg.New()
	changes.Undo("test: routes and DNS", func() error { restored.Store(true); return nil })
	client, server := recordtest.Pair(t, 0)
	ch, err := session.NewCSTPChannel(client, session.NewFrameReader(client), 1400)
	if err != nil {
		t.Fatal(err)
	}
	log := quietLog()
	tn := &tunnel{
		o:   &Options{ReconnectTimeout: time.Second, DTLSAttemptPeriod: time.Minute, Log: log},
		log: log, dev: dev, changes: changes, downDone: make(chan struct{}),
		params: &cstp.TunnelParams{Address: netip.MustParseAddr("10.77.0.2"), Netmask: netip.MustParseAddr("255.255.255.0"), MTU: 1400, DPD: 30},
	}
	tn.testPanic = func(where string) { panic("injected fault in the " + where) }
	// The server's side: it must hear a DISCONNECT.
	disconnected := make(chan struct{})
	go func() {
		br := bufio.NewReaderSize(server, cstp.MaxPayload+16)
		for {
			typ, _, err := cstptest.ReadFrame(br)
			if err != nil {
				return
			}
			if typ == cstp.TypeDisconnect {
				close(disconnected)
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- tn.serve(context.Background(), ch, nil) }()
	pkt := append(make([]byte, tun.Headroom), 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 0, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1)
	kernel.Write([][]byte{pkt}, tun.Headroom) // the downlink reads it and panics
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after a panic in the downlink")
	}
	var pe *contain.PanicError
	if !errors.As(err, &pe) || ExitCode(err) != ExitTunnelLost {
		t.Fatalf("serve returned %v (exit code %d), want the panic with exit code %d", err, ExitCode(err), ExitTunnelLost)
	}
	if !restored.Load() {
		t.Fatal("routes and DNS not restored")
	}
	if n := tn.panics.Load(); n != 1 {
		t.Fatalf("panics counted %d, want 1", n)
	}
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("the server was not told (no DISCONNECT)")
	}
	select {
	case <-tn.downDone:
	default:
		t.Fatal("the downlink is still running")
	}
	if _, err := dev.Read(tun.NewBuffers(1), make([]int, 1), tun.Headroom); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("TUN device not closed: %v", err)
	}
}

package tuntest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"kvpn/tun"
)

func packet(b byte, n int) []byte {
	p := bytes.Repeat([]byte{b}, n)
	p[0] = 0x45 // IPv4, IHL 5
	return p
}

func TestPairBatch(t *testing.T) {
	a, b := NewPairConfig(Config{BatchSize: 4})
	defer a.Close()
	defer b.Close()

	out := tun.NewBuffers(6)
	for i := range out {
		p := packet(byte(i), 100+i)
		out[i] = out[i][:tun.Headroom+copy(out[i][tun.Headroom:], p)]
		out[i][tun.Headroom-1] = 0xff // headroom the double must overwrite
	}
	if n, err := a.Write(out, tun.Headroom); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if out[0][tun.Headroom-1] != 0 {
		t.Error("Write did not overwrite the virtio-net header area")
	}

	in := tun.NewBuffers(8)
	sizes := make([]int, 8)
	var got int
	for _, want := range []int{4, 2} { // BatchSize caps the first Read
		n, err := b.Read(in, sizes, tun.Headroom)
		if n != want || err != nil {
			t.Fatalf("Read = %d, %v; want %d", n, err, want)
		}
		for i := range n {
			p := in[i][tun.Headroom : tun.Headroom+sizes[i]]
			if !bytes.Equal(p, packet(byte(got), 100+got)) {
				t.Fatalf("packet %d differs", got)
			}
			got++
		}
	}
}

func TestRejects(t *testing.T) {
	a, b := NewPair()
	defer a.Close()
	defer b.Close()
	buf := make([]byte, tun.Headroom+20)
	if _, err := a.Write([][]byte{buf}, tun.Headroom); err == nil {
		t.Error("Write accepted a packet with IP version 0")
	}
	buf[tun.Headroom] = 0x45
	if _, err := a.Write([][]byte{buf}, 4); err == nil {
		t.Error("Write accepted offset 4")
	}
	if _, err := a.Write([][]byte{buf}, tun.Headroom); err != nil {
		t.Fatal(err)
	}
	small := [][]byte{make([]byte, tun.Headroom+10)}
	if _, err := b.Read(small, []int{0}, tun.Headroom); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Read into a short buffer: %v, want io.ErrShortBuffer", err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	a, b := NewPair()
	defer b.Close()
	done := make(chan error)
	go func() {
		_, err := a.Read(tun.NewBuffers(1), []int{0}, tun.Headroom)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	// Writes towards the closed end are dropped, not blocked.
	buf := packet(0, 20)
	pkt := append(make([]byte, tun.Headroom), buf...)
	if n, err := b.Write([][]byte{pkt}, tun.Headroom); n != 1 || err != nil {
		t.Errorf("Write to closed peer = %d, %v", n, err)
	}
}

package ktlsbridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"

	"kvpn/record"
)

// TestCoalesce counts the TLS records a crypto/tls peer receives for 64
// frames written in one batch. With the cstp-coalesce extension the kernel
// engine packs them into full records (here, far fewer than 64); the
// userspace engine, and the kernel one without the extension, send one
// record per frame, which stock OpenConnect peers need. The peer reads the
// same byte stream either way.
func TestCoalesce(t *testing.T) {
	const frames, size = 64, 100
	for _, coalesce := range []bool{false, true} {
		srv, peer, recs := pairCounting(t, variants[0])
		srv.SetCoalesce(coalesce)
		bufs := make([][]byte, frames)
		var want []byte
		for i := range bufs {
			b := make([]byte, record.Headroom+size, record.Headroom+size+record.Tailroom)
			for j := record.Headroom; j < len(b); j++ {
				b[j] = byte(i + j)
			}
			want = append(want, b[record.Headroom:]...)
			bufs[i] = b
		}
		before := recs.appData()
		if err := srv.WriteRecords(bufs, record.Headroom); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("coalesce=%v: the peer read other bytes than were sent", coalesce)
		}
		n := recs.appData() - before
		t.Logf("coalesce=%v, tx=%s: %d frames arrived in %d records", coalesce, srv.Engine().TX, frames, n)
		switch packs := coalesce && srv.Engine().TX == EngineKernel; {
		case packs && n >= frames/4:
			t.Errorf("coalesce on the kernel engine: %d records for %d frames, want them packed", n, frames)
		case !packs && n != frames:
			t.Errorf("coalesce=%v on the %s engine: %d records for %d frames, want one each", coalesce, srv.Engine().TX, n, frames)
		}
		if expectKernel && srv.Engine().TX != EngineKernel {
			t.Errorf("kernel TLS expected, got %v", srv.Engine())
		}
	}
}

// recordCounter counts the TLS records of one content type that pass
// through a connection's reads, by their 5-byte headers (RFC 8446 section
// 5.1: type, legacy version and length are sent in clear).
type recordCounter struct {
	net.Conn
	mu      sync.Mutex
	hdr     []byte // a partial header
	skip    int    // body bytes of the current record still to pass
	counted int    // application_data records (type 23)
}

func (c *recordCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	for b := p[:n]; len(b) > 0; {
		if c.skip > 0 {
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
			continue
		}
		k := min(5-len(c.hdr), len(b))
		c.hdr = append(c.hdr, b[:k]...)
		b = b[k:]
		if len(c.hdr) == 5 {
			if c.hdr[0] == 23 {
				c.counted++
			}
			c.skip = int(c.hdr[3])<<8 | int(c.hdr[4])
			c.hdr = c.hdr[:0]
		}
	}
	return n, err
}

func (c *recordCounter) appData() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counted
}

// pairCounting connects our server end (ktls=auto) to a crypto/tls client
// whose reads go through a recordCounter.
func pairCounting(t *testing.T, v variant) (*Conn, *tls.Conn, *recordCounter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	scfg, ccfg := configs(t, v)
	type res struct {
		c   *Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- res{nil, err}
			return
		}
		c, err := Server(context.Background(), raw, scfg, ModeAuto)
		done <- res{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counter := &recordCounter{Conn: raw}
	peer := tls.Client(counter, ccfg)
	if err := peer.Handshake(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { peer.Close(); r.c.Close() })
	return r.c, peer, counter
}

package record_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"testing"

	"kvpn/record"
	"kvpn/record/recordtest"
)

// withRoom copies p behind record.Headroom bytes, with record.Tailroom of
// spare capacity: the room WriteRecords may seal into.
func withRoom(p []byte) []byte {
	b := make([]byte, record.Headroom+len(p), record.Headroom+len(p)+record.Tailroom)
	copy(b[record.Headroom:], p)
	return b
}

// TestWriteRecordsOneRecordPerBuffer checks the property stock OpenConnect
// peers rely on: every buffer of a batch arrives as a TLS record of its
// own. The reader is crypto/tls, whose Read returns at most one record's
// plaintext per call, so with a large read buffer each Read must return
// exactly one buffer.
func TestWriteRecordsOneRecordPerBuffer(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(fmt.Sprintf("%x", v), func(t *testing.T) {
			c, s := recordtest.PairStock(t, v)
			var recs, bufs [][]byte
			for i := range 50 {
				rec := bytes.Repeat([]byte{byte(i)}, 1+i*29)
				recs = append(recs, rec)
				bufs = append(bufs, withRoom(rec))
			}
			errc := make(chan error, 1)
			go func() { errc <- c.WriteRecords(bufs, record.Headroom) }()
			buf := make([]byte, 64<<10)
			for i, want := range recs {
				n, err := s.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf[:n], want) {
					t.Fatalf("record %d: got %d bytes, want %d", i, n, len(want))
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if e := c.Engine(); e.TX != "userspace" || e.RX != "userspace" {
				t.Fatalf("engine %v", e)
			}
		})
	}
}

// TestCloseIsEOF checks that Close sends close_notify: the peer reads EOF.
func TestCloseIsEOF(t *testing.T) {
	c, s := recordtest.Pair(t, 0)
	c.Write([]byte("last"))
	c.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "last" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func BenchmarkWriteRecords(b *testing.B) {
	c, s := recordtest.Pair(b, 0)
	go io.Copy(io.Discard, s)
	recs := make([][]byte, 64)
	for i := range recs {
		recs[i] = withRoom(make([]byte, 1400))
	}
	b.SetBytes(64 * 1400)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WriteRecords(recs, record.Headroom); err != nil {
			b.Fatal(err)
		}
	}
}

// Package recordtest makes connected record.Conn pairs over loopback TCP
// with a throw-away certificate, for tests of the layers above the record
// layer. The connections are what vpnd and vpnc run: ktlsbridge.Conn, with
// kernel TLS off (ktlsbridge.ModeOff) so that every test gets the same
// userspace record engine whatever the kernel offers.
package recordtest

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"kvpn/certs"
	"kvpn/ktlsbridge"
	"kvpn/record"
)

// listen opens the loopback listener and makes the server's and the
// client's TLS configurations (kvpn's policy, a throw-away certificate).
func listen(tb testing.TB, maxVersion uint16) (ln net.Listener, scfg, ccfg *tls.Config) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	scfg = record.BaseConfig()
	scfg.Certificates = []tls.Certificate{selfSigned(tb)}
	scfg.MaxVersion = maxVersion
	ccfg = record.BaseConfig()
	ccfg.InsecureSkipVerify = true
	ccfg.MaxVersion = maxVersion
	return ln, scfg, ccfg
}

// Pair returns a client and a server record.Conn joined over 127.0.0.1,
// closed when the test ends. maxVersion 0 lets them negotiate TLS 1.3.
func Pair(tb testing.TB, maxVersion uint16) (client, server record.Conn) {
	tb.Helper()
	ln, scfg, ccfg := listen(tb, maxVersion)
	defer ln.Close()

	type result struct {
		c   *ktlsbridge.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- result{nil, err}
			return
		}
		c, err := ktlsbridge.Server(context.Background(), raw, scfg, ktlsbridge.ModeOff)
		done <- result{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	client, err = ktlsbridge.Client(context.Background(), raw, ccfg, ktlsbridge.ModeOff)
	if err != nil {
		tb.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		tb.Fatal(r.err)
	}
	tb.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// PairStock is Pair with a stock crypto/tls server instead of a
// record.Conn: it reads records the way OpenConnect peers do, one record's
// plaintext per Read. maxVersion 0 lets them negotiate TLS 1.3.
func PairStock(tb testing.TB, maxVersion uint16) (client record.Conn, server *tls.Conn) {
	tb.Helper()
	ln, scfg, ccfg := listen(tb, maxVersion)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err == nil {
			server = tls.Server(raw, scfg)
			err = server.HandshakeContext(context.Background())
		}
		done <- err
	}()
	craw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	c, err := ktlsbridge.Client(context.Background(), craw, ccfg, ktlsbridge.ModeOff)
	if err != nil {
		tb.Fatal(err)
	}
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); server.Close() })
	return c, server
}

// PairRaw is PairStock, but the server side is returned as the raw TCP
// connection after the handshake: reading it drains ciphertext without
// opening records, so allocation counts of the client's writes are not
// mixed with the reader's.
func PairRaw(tb testing.TB) (client record.Conn, server net.Conn) {
	tb.Helper()
	client, s := PairStock(tb, 0)
	return client, s.NetConn()
}

func selfSigned(tb testing.TB) tls.Certificate {
	c, err := certs.SelfSigned("recordtest", time.Hour, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

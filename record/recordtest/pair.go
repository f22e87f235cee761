// Package recordtest makes connected record.Conn pairs over loopback TCP
// with a throw-away certificate, for tests of the layers above the record
// layer.
package recordtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"kvpn/record"
)

// Pair returns a client and a server record.Conn joined over 127.0.0.1,
// closed when the test ends. maxVersion 0 lets them negotiate TLS 1.3.
func Pair(tb testing.TB, maxVersion uint16) (client, server record.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	scfg := record.BaseConfig()
	scfg.Certificates = []tls.Certificate{selfSigned(tb)}
	scfg.MaxVersion = maxVersion
	ccfg := record.BaseConfig()
	ccfg.InsecureSkipVerify = true
	ccfg.MaxVersion = maxVersion

	type result struct {
		c   record.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- result{nil, err}
			return
		}
		c, err := record.Server(context.Background(), raw, scfg)
		done <- result{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	client, err = record.Client(context.Background(), raw, ccfg)
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

// PairRaw is Pair, but the server side is returned as the raw TCP
// connection after the handshake: reading it drains ciphertext without
// running crypto/tls, so allocation counts of the client's writes are not
// mixed with the reader's.
func PairRaw(tb testing.TB) (client record.Conn, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	scfg := record.BaseConfig()
	scfg.Certificates = []tls.Certificate{selfSigned(tb)}
	ccfg := record.BaseConfig()
	ccfg.InsecureSkipVerify = true
	done := make(chan error, 1)
	var raw net.Conn
	go func() {
		var err error
		raw, err = ln.Accept()
		if err == nil {
			err = tls.Server(raw, scfg).HandshakeContext(context.Background())
		}
		done <- err
	}()
	craw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	client, err = record.Client(context.Background(), craw, ccfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close(); raw.Close() })
	return client, raw
}

func selfSigned(tb testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "recordtest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

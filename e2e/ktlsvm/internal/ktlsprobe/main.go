// Command ktlsprobe shows, inside the ktlsvm VM, that the kernel's TLS works
// with the raw socket options kvpn's ktlsbridge uses, with no handshake:
//
//   - negative controls: TLS_TX on a socket without the "tls" ULP, and
//     TLS_TX with an unknown cipher_type or TLS version, must fail;
//   - TLS_TX (TLS 1.3, AES-128-GCM) on a connected TCP socket: two records
//     written through it arrive at a userspace reader as TLS records (type
//     23, version 0x0303) that decrypt byte-exactly with Go's AES-GCM at
//     sequence numbers 0 and 1;
//   - TLS_RX: a record sealed in userspace reads back as plaintext, and a
//     record with one flipped bit fails with EBADMSG;
//   - /proc/net/tls_stat, read while the sockets are open, counts them.
//
// It prints "ktlsprobe: ok ..." per step, the tls_stat lines prefixed with
// "ktlsprobe-stat: ", and finally "ktlsprobe: PASS"; on the first failure
// "ktlsprobe: FAIL ..." and exit status 1.
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Not in x/sys/unix (see /work/shared/notes/ktls-vm.md).
const (
	solTLS          = 282 // unix.SOL_TLS
	tlsTX           = 1
	tlsRX           = 2
	cipherAESGCM128 = 51
	tls13Version    = 0x0304
	cryptoInfoLen   = 40 // struct tls12_crypto_info_aes_gcm_128
	recordData      = 23
	tagLen          = 16
)

func main() {
	if err := run(); err != nil {
		fmt.Printf("ktlsprobe: FAIL %v\n", err)
		os.Exit(1)
	}
	fmt.Println("ktlsprobe: PASS")
}

// cryptoInfo builds struct tls12_crypto_info_aes_gcm_128: version and
// cipher_type in host order, then iv[8], key[16], salt[4], rec_seq[8]
// (big-endian). For TLS 1.3 the 12-byte IV splits into salt = iv[0:4] and
// iv = iv[4:12].
func cryptoInfo(version, cipherType uint16, key [16]byte, iv [12]byte, seq uint64) []byte {
	b := make([]byte, cryptoInfoLen)
	binary.NativeEndian.PutUint16(b[0:], version)
	binary.NativeEndian.PutUint16(b[2:], cipherType)
	copy(b[4:12], iv[4:12])
	copy(b[12:28], key[:])
	copy(b[28:32], iv[0:4])
	binary.BigEndian.PutUint64(b[32:40], seq)
	return b
}

// pair returns both ends of a loopback TCP connection.
func pair() (client, server *net.TCPConn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	r := <-ch
	if r.err != nil {
		c.Close()
		return nil, nil, r.err
	}
	return c.(*net.TCPConn), r.c.(*net.TCPConn), nil
}

// sockopt runs one setsockopt on the connection's descriptor.
func sockopt(c *net.TCPConn, level, opt int, val string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptString(int(fd), level, opt, val) }); err != nil {
		return err
	}
	return serr
}

func ulp(c *net.TCPConn) error {
	if err := sockopt(c, unix.IPPROTO_TCP, unix.TCP_ULP, "tls"); err != nil {
		return fmt.Errorf("setsockopt(TCP_ULP, \"tls\"): %w", err)
	}
	return nil
}

// gcmRecord is the userspace view of a TLS 1.3 AES-GCM record layer.
type gcmRecord struct {
	aead cipher.AEAD
	iv   [12]byte
}

func newGCM(key [16]byte, iv [12]byte) gcmRecord {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return gcmRecord{a, iv}
}

func (g gcmRecord) nonce(seq uint64) []byte {
	n := g.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	for i := range s {
		n[4+i] ^= s[i]
	}
	return n[:]
}

// seal returns a whole TLS 1.3 record carrying data as application data.
func (g gcmRecord) seal(seq uint64, data []byte) []byte {
	inner := append(append([]byte{}, data...), recordData)
	hdr := []byte{recordData, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+tagLen))
	return g.aead.Seal(hdr, g.nonce(seq), inner, hdr)
}

// open checks and decrypts one whole record.
func (g gcmRecord) open(seq uint64, rec []byte) ([]byte, error) {
	hdr := rec[:5]
	pt, err := g.aead.Open(nil, g.nonce(seq), rec[5:], hdr)
	if err != nil {
		return nil, err
	}
	if len(pt) == 0 || pt[len(pt)-1] != recordData {
		return nil, fmt.Errorf("inner content type %v, want %d", pt[len(pt)-1:], recordData)
	}
	return pt[:len(pt)-1], nil
}

func readRecord(c *net.TCPConn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, fmt.Errorf("reading record header: %w", err)
	}
	if hdr[0] != recordData || hdr[1] != 3 || hdr[2] != 3 {
		return nil, fmt.Errorf("record header % x, want type 23 version 0x0303", hdr)
	}
	n := int(binary.BigEndian.Uint16(hdr[3:]))
	rec := make([]byte, 5+n)
	copy(rec, hdr)
	if _, err := io.ReadFull(c, rec[5:]); err != nil {
		return nil, fmt.Errorf("reading record body: %w", err)
	}
	return rec, nil
}

func ok(format string, args ...any) { fmt.Printf("ktlsprobe: ok "+format+"\n", args...) }

func run() error {
	var txKey, rxKey [16]byte
	var txIV, rxIV [12]byte
	for i := range txKey {
		txKey[i], rxKey[i] = byte(i+1), byte(0xa0+i)
	}
	for i := range txIV {
		txIV[i], rxIV[i] = byte(0x40+i), byte(0x70+i)
	}
	valid := string(cryptoInfo(tls13Version, cipherAESGCM128, txKey, txIV, 0))

	// Negative controls first: a kernel or harness that accepted anything
	// would make the positive steps meaningless.
	c, s, err := pair()
	if err != nil {
		return err
	}
	if err := sockopt(c, solTLS, tlsTX, valid); err == nil {
		return errors.New("TLS_TX without the tls ULP succeeded")
	} else {
		ok("TLS_TX without ULP refused: %v", err)
	}
	if err := ulp(c); err != nil {
		return err
	}
	ok("TCP_ULP tls")
	bad := string(cryptoInfo(tls13Version, 0x7777, txKey, txIV, 0))
	if err := sockopt(c, solTLS, tlsTX, bad); !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("TLS_TX with cipher_type 0x7777: %v, want EINVAL or ENOENT", err)
	} else {
		ok("TLS_TX with invalid cipher_type refused: %v", err)
	}
	bad = string(cryptoInfo(0x0301, cipherAESGCM128, txKey, txIV, 0))
	if err := sockopt(c, solTLS, tlsTX, bad); !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("TLS_TX with version 0x0301: %v, want EINVAL", err)
	} else {
		ok("TLS_TX with TLS 1.0 version refused: %v", err)
	}
	c.Close()
	s.Close()

	// TX: kernel encrypts, userspace decrypts.
	txc, txs, err := pair()
	if err != nil {
		return err
	}
	defer txc.Close()
	defer txs.Close()
	if err := ulp(txc); err != nil {
		return err
	}
	if err := sockopt(txc, solTLS, tlsTX, valid); err != nil {
		return fmt.Errorf("TLS_TX AES-128-GCM TLS 1.3: %w", err)
	}
	ok("TLS_TX AES-128-GCM TLS 1.3 accepted")
	g := newGCM(txKey, txIV)
	for seq, msg := range []string{"hello from kernel TLS", strings.Repeat("kvpn", 1000)} {
		if _, err := txc.Write([]byte(msg)); err != nil {
			return fmt.Errorf("write through kTLS: %w", err)
		}
		rec, err := readRecord(txs)
		if err != nil {
			return err
		}
		if want := len(msg) + 1 + tagLen; len(rec)-5 != want {
			return fmt.Errorf("record %d: length %d, want %d", seq, len(rec)-5, want)
		}
		pt, err := g.open(uint64(seq), rec)
		if err != nil {
			return fmt.Errorf("record %d: userspace AES-GCM open: %w", seq, err)
		}
		if string(pt) != msg {
			return fmt.Errorf("record %d: plaintext differs", seq)
		}
		ok("record seq=%d: header % x, %d bytes decrypt byte-exactly in userspace", seq, rec[:5], len(pt))
	}

	// RX: userspace encrypts, kernel decrypts.
	rxc, rxs, err := pair()
	if err != nil {
		return err
	}
	defer rxc.Close()
	defer rxs.Close()
	if err := ulp(rxs); err != nil {
		return err
	}
	if err := sockopt(rxs, solTLS, tlsRX, string(cryptoInfo(tls13Version, cipherAESGCM128, rxKey, rxIV, 0))); err != nil {
		return fmt.Errorf("TLS_RX AES-128-GCM TLS 1.3: %w", err)
	}
	ok("TLS_RX AES-128-GCM TLS 1.3 accepted")
	gr := newGCM(rxKey, rxIV)
	msg := []byte("hello to kernel TLS")
	if _, err := rxc.Write(gr.seal(0, msg)); err != nil {
		return err
	}
	rxs.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	n, err := rxs.Read(buf)
	if err != nil {
		return fmt.Errorf("read through kTLS RX: %w", err)
	}
	if !bytes.Equal(buf[:n], msg) {
		return fmt.Errorf("kTLS RX read %q, want %q", buf[:n], msg)
	}
	ok("kTLS RX decrypted a userspace record: %q", buf[:n])
	// Negative control: one flipped bit in the next record.
	rec := gr.seal(1, msg)
	rec[len(rec)-1] ^= 1
	if _, err := rxc.Write(rec); err != nil {
		return err
	}
	if n, err := rxs.Read(buf); !errors.Is(err, unix.EBADMSG) {
		return fmt.Errorf("tampered record: read %d bytes, err %v; want EBADMSG", n, err)
	} else {
		ok("tampered record refused: %v", err)
	}

	// Counters, while txc and rxs are still open.
	stat, err := os.ReadFile("/proc/net/tls_stat")
	if err != nil {
		return err
	}
	vals := map[string]int{}
	for line := range strings.Lines(string(stat)) {
		fmt.Printf("ktlsprobe-stat: %s", line)
		if f := strings.Fields(line); len(f) == 2 {
			vals[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	for _, k := range []string{"TlsCurrTxSw", "TlsCurrRxSw", "TlsTxSw", "TlsRxSw", "TlsDecryptError"} {
		if vals[k] < 1 {
			return fmt.Errorf("/proc/net/tls_stat: %s = %d, want >= 1", k, vals[k])
		}
	}
	ok("/proc/net/tls_stat: TlsCurrTxSw=%d TlsCurrRxSw=%d TlsDecryptError=%d", vals["TlsCurrTxSw"], vals["TlsCurrRxSw"], vals["TlsDecryptError"])
	return nil
}

package ktlsbridge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvpn/internal/testenv"
)

func ktHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeriveKeysTLS13Vector: RFC 8448 (section 3) derives, from the
// traffic secret b67b7d69..., the write key 3fce5160... and IV 5d313eb2...
// (TLS_AES_128_GCM_SHA256).
func TestDeriveKeysTLS13Vector(t *testing.T) {
	secret := ktHex(t, "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38")
	wantKey := ktHex(t, "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc")
	wantIV := ktHex(t, "5d 31 3e b2 67 12 76 ee 13 00 0b 30")
	cli, srv, err := DeriveKeys(&Secrets{
		Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256,
		ClientSecret: secret, ServerSecret: secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Keys{cli, srv} {
		if !bytes.Equal(k.Key, wantKey) || !bytes.Equal(k.IV, wantIV) || k.Seq != 0 ||
			k.Version != tls.VersionTLS13 || k.Cipher != CipherAES128GCM {
			t.Fatalf("got %+v, want key %x iv %x", k, wantKey, wantIV)
		}
	}
}

// TestDeriveKeysTLS12Vector: the whole TLS 1.2 key expansion against key
// blocks computed with OpenSSL's TLS1-PRF (seed "key expansion" +
// server_random + client_random), for a SHA-384 and a SHA-256 suite:
//
//	openssl kdf -keylen N -kdfopt digest:SHA2-384 -kdfopt hexsecret:<master>
//	  -kdfopt seed:"key expansion" -kdfopt hexseed:<server random><client random> TLS1-PRF
func TestDeriveKeysTLS12Vector(t *testing.T) {
	s := &Secrets{Version: tls.VersionTLS12, MasterSecret: make([]byte, 48)}
	for i := range 48 {
		s.MasterSecret[i] = byte(i + 1)
	}
	for i := range 32 {
		s.ClientRandom[i] = byte(0x20 + i)
		s.ServerRandom[i] = byte(0x40 + i)
	}
	for _, tc := range []struct {
		suite         uint16
		cipher        Cipher
		keyLen, ivLen int
		keyBlock      string
	}{
		{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, CipherAES256GCM, 32, 4, ktBlockAES256},
		{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, CipherChaCha20Poly1305, 32, 12, ktBlockChaCha},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherAES128GCM, 16, 4, ktBlockAES128},
	} {
		s.CipherSuite = tc.suite
		cli, srv, err := DeriveKeys(s)
		if err != nil {
			t.Fatal(err)
		}
		block := ktHex(t, tc.keyBlock)
		if len(block) != 2*tc.keyLen+2*tc.ivLen {
			t.Fatalf("vector of %d bytes", len(block))
		}
		k, v := tc.keyLen, tc.ivLen
		want := []Keys{
			{tls.VersionTLS12, tc.cipher, block[:k], block[2*k : 2*k+v], 1},
			{tls.VersionTLS12, tc.cipher, block[k : 2*k], block[2*k+v:], 1},
		}
		for i, got := range []Keys{cli, srv} {
			w := want[i]
			if got.Version != w.Version || got.Cipher != w.Cipher || got.Seq != w.Seq ||
				!bytes.Equal(got.Key, w.Key) || !bytes.Equal(got.IV, w.IV) {
				t.Errorf("%s side %d: got %+v\nwant %+v", tls.CipherSuiteName(tc.suite), i, got, w)
			}
		}
		// Appending to one key cannot overwrite the next.
		if cap(cli.Key) != len(cli.Key) || cap(srv.Key) != len(srv.Key) || cap(cli.IV) != len(cli.IV) {
			t.Error("key slices have spare capacity into the key block")
		}
	}
}

// OpenSSL 3.0 key blocks for TestDeriveKeysTLS12Vector: master secret
// 01..30, client random 20..3f, server random 40..5f.
const (
	// digest SHA2-384, 72 bytes.
	ktBlockAES256 = `2040d4721ce30c1482f17cdffd936ae2020ec23bd949706b855682d49d046c61
		c76096295056da001ec1e92d59af33f66d36c23e12463e1383a980890b8eb1ad
		72c93d6a91ae719c`
	// digest SHA2-256, 88 bytes.
	ktBlockChaCha = `6403b0383ab7bb88f1233ee3b28d2433f7dc10da19f723de9d954475210296b8
		06f2a1f20250dced311796c4eb2f28ce86c659107b6ec0fcc21337af6ce467e7
		cfe882c3399b9676c142d1911da2c4285f409e27466f50b4`
	// digest SHA2-256, 40 bytes.
	ktBlockAES128 = `6403b0383ab7bb88f1233ee3b28d2433f7dc10da19f723de9d954475210296b8
		06f2a1f20250dced`
)

// TestDeriveKeysErrors: unsupported versions and suites wrap
// ErrUnsupported; missing or malformed secrets are errors of their own.
func TestDeriveKeysErrors(t *testing.T) {
	secret := make([]byte, 32)
	for _, s := range []Secrets{
		{Version: tls.VersionTLS11, CipherSuite: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{Version: tls.VersionTLS12, CipherSuite: tls.TLS_RSA_WITH_AES_128_GCM_SHA256},
		{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA},
		{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256},
		{Version: tls.VersionTLS12, CipherSuite: tls.TLS_AES_128_GCM_SHA256},
		{Version: tls.VersionTLS13, CipherSuite: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, ClientSecret: secret, ServerSecret: secret},
		{Version: tls.VersionTLS13, CipherSuite: 0x1304, ClientSecret: secret, ServerSecret: secret}, // TLS_AES_128_CCM_SHA256
		{Version: tls.VersionTLS13, CipherSuite: 0},
	} {
		if _, _, err := DeriveKeys(&s); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s %s: %v, want ErrUnsupported", tls.VersionName(s.Version), tls.CipherSuiteName(s.CipherSuite), err)
		}
	}
	r := [32]byte{1}
	for name, s := range map[string]*Secrets{
		"nil":                                   nil,
		"TLS 1.3 without secrets":               {Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256},
		"TLS 1.3 short server secret":           {Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, ClientSecret: secret, ServerSecret: secret[:31]},
		"TLS 1.3 SHA-256 secret, SHA-384 suite": {Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_256_GCM_SHA384, ClientSecret: secret, ServerSecret: secret},
		"TLS 1.2 without master secret":         {Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ClientRandom: r, ServerRandom: r},
		"TLS 1.2 short master secret":           {Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ClientRandom: r, ServerRandom: r, MasterSecret: make([]byte, 47)},
		"TLS 1.2 without server random":         {Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ClientRandom: r, MasterSecret: make([]byte, 48)},
	} {
		if _, _, err := DeriveKeys(s); err == nil || errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want an error other than ErrUnsupported", name, err)
		}
	}
}

func TestCipherString(t *testing.T) {
	for c, want := range map[Cipher]string{
		CipherAES128GCM:        "AES-128-GCM",
		CipherAES256GCM:        "AES-256-GCM",
		CipherChaCha20Poly1305: "ChaCha20-Poly1305",
		0:                      "Cipher(0)",
		7:                      "Cipher(7)",
	} {
		if got := c.String(); got != want {
			t.Errorf("%d: %q, want %q", int(c), got, want)
		}
	}
}

// The kernel's crypto_info structures (include/uapi/linux/tls.h), mirrored
// to decode what KernelInfo marshals: the field offsets follow from the
// declaration order, and the sizes from the alignment of 2.
type (
	ktInfoHeader struct{ Version, CipherType uint16 }
	ktInfoGCM128 struct {
		ktInfoHeader
		IV     [8]byte
		Key    [16]byte
		Salt   [4]byte
		RecSeq [8]byte
	}
	ktInfoGCM256 struct {
		ktInfoHeader
		IV     [8]byte
		Key    [32]byte
		Salt   [4]byte
		RecSeq [8]byte
	}
	ktInfoChaCha struct {
		ktInfoHeader
		IV     [12]byte
		Key    [32]byte
		RecSeq [8]byte
	}
)

// TestKernelInfo: golden layouts for every version and cipher.
func TestKernelInfo(t *testing.T) {
	seq := uint64(0x0102030405060708)
	seqBE := ktHex(t, "01 02 03 04 05 06 07 08")
	littleEndian := binary.NativeEndian.Uint16([]byte{1, 0}) == 1
	for _, tc := range []struct {
		kind   ktKind
		size   int
		golden string // on a little-endian host
	}{
		{ktKind{tls.VersionTLS12, CipherAES128GCM}, 40,
			"0303 3300 0102030405060708 101112131415161718191a1b1c1d1e1f a0a1a2a3 0102030405060708"},
		{ktKind{tls.VersionTLS12, CipherAES256GCM}, 56,
			"0303 3400 0102030405060708 101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f a0a1a2a3 0102030405060708"},
		{ktKind{tls.VersionTLS12, CipherChaCha20Poly1305}, 56,
			"0303 3600 a0a1a2a3a4a5a6a7a8a9aaab 101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f 0102030405060708"},
		{ktKind{tls.VersionTLS13, CipherAES128GCM}, 40,
			"0403 3300 a4a5a6a7a8a9aaab 101112131415161718191a1b1c1d1e1f a0a1a2a3 0102030405060708"},
		{ktKind{tls.VersionTLS13, CipherAES256GCM}, 56,
			"0403 3400 a4a5a6a7a8a9aaab 101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f a0a1a2a3 0102030405060708"},
		{ktKind{tls.VersionTLS13, CipherChaCha20Poly1305}, 56,
			"0403 3600 a0a1a2a3a4a5a6a7a8a9aaab 101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f 0102030405060708"},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			k := ktTestKeys(tc.kind, 0x10, seq)
			for i := range k.IV {
				k.IV[i] = byte(0xa0 + i)
			}
			info := k.KernelInfo()
			if len(info) != tc.size {
				t.Fatalf("%d bytes, want %d", len(info), tc.size)
			}
			if littleEndian {
				if want := ktHex(t, tc.golden); !bytes.Equal(info, want) {
					t.Fatalf("\n got %x\nwant %x", info, want)
				}
			}
			var hdr ktInfoHeader
			binary.Read(bytes.NewReader(info), binary.NativeEndian, &hdr)
			wantType := map[Cipher]uint16{CipherAES128GCM: 51, CipherAES256GCM: 52, CipherChaCha20Poly1305: 54}[k.Cipher]
			if hdr.Version != k.Version || hdr.CipherType != wantType {
				t.Fatalf("header %+v", hdr)
			}
			var iv, key, salt, recSeq []byte
			switch k.Cipher {
			case CipherAES128GCM:
				var s ktInfoGCM128
				binary.Read(bytes.NewReader(info), binary.NativeEndian, &s)
				iv, key, salt, recSeq = s.IV[:], s.Key[:], s.Salt[:], s.RecSeq[:]
			case CipherAES256GCM:
				var s ktInfoGCM256
				binary.Read(bytes.NewReader(info), binary.NativeEndian, &s)
				iv, key, salt, recSeq = s.IV[:], s.Key[:], s.Salt[:], s.RecSeq[:]
			default:
				var s ktInfoChaCha
				binary.Read(bytes.NewReader(info), binary.NativeEndian, &s)
				iv, key, recSeq = s.IV[:], s.Key[:], s.RecSeq[:]
			}
			if binary.Size(ktInfoGCM128{}) != 40 || binary.Size(ktInfoGCM256{}) != 56 || binary.Size(ktInfoChaCha{}) != 56 {
				t.Fatal("mirror structures have the wrong size")
			}
			if !bytes.Equal(key, k.Key) || !bytes.Equal(recSeq, seqBE) {
				t.Fatalf("key %x rec_seq %x", key, recSeq)
			}
			switch {
			case k.Cipher == CipherChaCha20Poly1305:
				if !bytes.Equal(iv, k.IV) {
					t.Fatalf("iv %x, want all of IV %x", iv, k.IV)
				}
			case k.Version == tls.VersionTLS13:
				if !bytes.Equal(salt, k.IV[:4]) || !bytes.Equal(iv, k.IV[4:]) {
					t.Fatalf("salt %x iv %x from IV %x", salt, iv, k.IV)
				}
			default:
				// TLS 1.2 AES-GCM: the explicit nonce starts at the
				// sequence number, as Seal (and crypto/tls) write it.
				if !bytes.Equal(salt, k.IV) || !bytes.Equal(iv, seqBE) {
					t.Fatalf("salt %x iv %x", salt, iv)
				}
			}
		})
	}
	// The TLS 1.2 AES-GCM iv follows Seq, and is what Seal puts in the
	// first record.
	k := ktTestKeys(ktKind{tls.VersionTLS12, CipherAES128GCM}, 1, 1)
	se, _ := ktSealerOpener(t, k)
	buf := make([]byte, 13+10+16)
	rec, err := se.Seal(buf, 13, 10, contentApplicationData)
	if err != nil {
		t.Fatal(err)
	}
	if info := k.KernelInfo(); !bytes.Equal(info[4:12], rec[5:13]) || !bytes.Equal(info[32:40], rec[5:13]) {
		t.Fatalf("kernel iv %x rec_seq %x, first record's explicit nonce %x", info[4:12], info[32:40], rec[5:13])
	}
	if (Keys{}).KernelInfo() != nil || (Keys{Version: tls.VersionTLS13, Cipher: CipherAES128GCM, Key: make([]byte, 16)}).KernelInfo() != nil {
		t.Fatal("KernelInfo of incomplete keys is not nil")
	}
}

// TestDeriveKeysOpenSSL covers TLS_AES_256_GCM_SHA384 (SHA-384 HKDF), which
// two crypto/tls peers never negotiate with each other, against OpenSSL
// restricted to that suite: our side a Capture-driven crypto/tls server
// with `openssl s_client` as the peer, and a client with `openssl
// s_server`. Skipped when the openssl command is missing.
func TestDeriveKeysOpenSSL(t *testing.T) {
	testenv.RequireCommand(t, "openssl")
	t.Run("ours=server", func(t *testing.T) {
		ec, _ := ktCerts(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cmd := exec.Command("openssl", "s_client", "-connect", ln.Addr().String(),
			"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384", "-quiet")
		stdin, out := ktStartOpenSSL(t, cmd)
		raw, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		ktOpenSSLExchange(t, raw, true, &tls.Config{Certificates: []tls.Certificate{ec}}, stdin, out)
	})
	t.Run("ours=client", func(t *testing.T) {
		ec, _ := ktCerts(t)
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		der, err := x509.MarshalPKCS8PrivateKey(ec.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ec.Certificate[0]}), 0o600)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		cmd := exec.Command("openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
			"-cert", certFile, "-key", keyFile, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384",
			"-num_tickets", "0")
		stdin, out := ktStartOpenSSL(t, cmd)
		var addr string
		for addr == "" {
			line, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("openssl s_server: %v", err)
			}
			if a, ok := strings.CutPrefix(strings.TrimSpace(line), "ACCEPT "); ok {
				addr = a
			}
		}
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		ktOpenSSLExchange(t, raw, false, &tls.Config{InsecureSkipVerify: true}, stdin, out)
	})
}

// ktStartOpenSSL starts cmd with pipes and kills it when the test ends.
func ktStartOpenSSL(t *testing.T, cmd *exec.Cmd) (io.Writer, *bufio.Reader) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("openssl stderr:\n%s", stderr.String())
		}
	})
	return stdin, bufio.NewReader(stdout)
}

// ktOpenSSLExchange runs our handshake on raw and one message each way
// with OpenSSL, which prints what it receives and sends its stdin.
func ktOpenSSLExchange(t *testing.T, raw net.Conn, server bool, cfg *tls.Config, stdin io.Writer, out *bufio.Reader) {
	t.Helper()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	capt := NewCapture(raw, server)
	var tc *tls.Conn
	if server {
		tc = tls.Server(capt.Conn(), capt.Config(cfg))
	} else {
		tc = tls.Client(capt.Conn(), capt.Config(cfg))
	}
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake with openssl: %v", err)
	}
	cs := tc.ConnectionState()
	if cs.Version != tls.VersionTLS13 || cs.CipherSuite != tls.TLS_AES_256_GCM_SHA384 {
		t.Fatalf("negotiated %s %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	}
	sec, err := capt.Finish(cs)
	if err != nil {
		t.Fatal(err)
	}
	cli, srv, err := DeriveKeys(sec)
	if err != nil {
		t.Fatal(err)
	}
	tx, rx := cli, srv
	if server {
		tx, rx = srv, cli
	}
	if tx.Cipher != CipherAES256GCM || len(tx.Key) != 32 {
		t.Fatalf("keys %+v", tx)
	}
	se, _ := ktSealerOpener(t, tx)
	_, op := ktSealerOpener(t, rx)

	ktSealTo(t, raw, se, []byte("hello from kvpn\n"), contentApplicationData)
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("openssl output: %v", err)
		}
		if strings.TrimSpace(line) == "hello from kvpn" {
			break
		}
	}
	if _, err := io.WriteString(stdin, "hello from openssl\n"); err != nil {
		t.Fatal(err)
	}
	rr := &ktRecordReader{conn: raw}
	typ, pt, err := op.Open(rr.next(t))
	if err != nil || typ != contentApplicationData || string(pt) != "hello from openssl\n" {
		t.Fatalf("from openssl: type %d %q %v", typ, pt, err)
	}
}

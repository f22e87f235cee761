package tlsprf

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var sha384New = sha512.New384

// TestPRF12: the TLS 1.2 PRF against the widely published P_SHA256 vector
// (IETF TLS working group list) and a P_SHA384 vector computed with
// `openssl kdf -keylen 148 -kdfopt digest:SHA2-384 -kdfopt
// hexsecret:b80b733d6ceefcdc71566ea48e5567df -kdfopt seed:"test label"
// -kdfopt hexseed:cd665cf6a8447dd6ff8b27555edb7465 TLS1-PRF`.
func TestPRF12(t *testing.T) {
	got := PRF12(sha256.New, unhex(t, "9bbe436ba940f017b17652849a71db35"), "test label",
		unhex(t, "a0ba9f936cda311827a6f796ffd5198c"), 100)
	want := unhex(t, `e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a
		6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab
		4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701
		87347b66`)
	if !bytes.Equal(got, want) {
		t.Errorf("P_SHA256:\n got %x\nwant %x", got, want)
	}
	got = PRF12(sha384New, unhex(t, "b80b733d6ceefcdc71566ea48e5567df"), "test label",
		unhex(t, "cd665cf6a8447dd6ff8b27555edb7465"), 148)
	want = unhex(t, `7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cd
		e9ca0faa60be9fe34f82b1233c9146a0e534cb400fed2700884f9dc236f80edd
		8bfa961144c9e8d792eca722a7b32fc3d416d473ebc2c5fd4abfdad05d918425
		9b5bf8cd4d90fa0d31e2dec479e4f1a26066f2eea9a69236a3e52655c9e9aee6
		91c8f3a26854308d5eaa3be85e0990703d73e56f`)
	if !bytes.Equal(got, want) {
		t.Errorf("P_SHA384:\n got %x\nwant %x", got, want)
	}
}

// TestPRF10: the TLS 1.0 PRF (DTLS 0.9's) against a vector computed with
// `openssl kdf -keylen 48 -kdfopt digest:MD5-SHA1 -kdfopt
// hexsecret:0102030405060708090a0b0c0d0e0f1011 -kdfopt seed:"test label"
// -kdfopt hexseed:a0ba9f936cda311827a6f796ffd5198c TLS1-PRF`; the secret's
// odd length makes the two halves share its middle byte.
func TestPRF10(t *testing.T) {
	got := PRF10(unhex(t, "0102030405060708090a0b0c0d0e0f1011"), "test label",
		unhex(t, "a0ba9f936cda311827a6f796ffd5198c"), 48)
	want := unhex(t, `f96994cf16db57ee5af560084e1b9fa2e1bffde1858bf529381315f67d71d3ef
		413428a3edebf81e734fa15cc890008d`)
	if !bytes.Equal(got, want) {
		t.Errorf("TLS 1.0 PRF:\n got %x\nwant %x", got, want)
	}
}

package dtls

import (
	"bytes"
	"testing"
)

// clientHello builds a minimal DTLS 1.2 ClientHello datagram prefix with the
// given session_id.
func clientHello(sid []byte) []byte {
	b := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // record header (length unchecked)
	b = append(b, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)         // handshake header, fragment offset 0
	b = append(b, 0xfe, 0xfd)                                 // client_version
	b = append(b, make([]byte, 32)...)                        // random
	b = append(b, byte(len(sid)))
	b = append(b, sid...)
	return append(b, 0, 2, 0, 0xa8, 1, 0) // suites, compression
}

func TestClientHelloAppID(t *testing.T) {
	id := bytes.Repeat([]byte{0xab}, 32)
	got, err := ClientHelloAppID(clientHello(id))
	if err != nil || !bytes.Equal(got, id) {
		t.Fatalf("got %x, %v", got, err)
	}
}

func TestClientHelloAppIDRejects(t *testing.T) {
	id := bytes.Repeat([]byte{1}, 32)
	mut := func(f func(b []byte)) []byte { b := clientHello(id); f(b); return b }
	for name, b := range map[string][]byte{
		"short":         clientHello(id)[:91],
		"not handshake": mut(func(b []byte) { b[0] = 23 }),
		"tls version":   mut(func(b []byte) { b[1] = 3 }),
		"epoch 1":       mut(func(b []byte) { b[4] = 1 }),
		"server hello":  mut(func(b []byte) { b[13] = 2 }),
		"fragment":      mut(func(b []byte) { b[21] = 1 }),
		"no session id": clientHello(nil),
		"16-byte id":    clientHello(id[:16]),
	} {
		if _, err := ClientHelloAppID(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzClientHelloAppID(f *testing.F) {
	f.Add(clientHello(bytes.Repeat([]byte{7}, 32)))
	f.Add([]byte{22, 0xfe, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ClientHelloAppID(b)
		if err == nil && len(id) != AppIDLen {
			t.Fatalf("accepted a %d-byte id", len(id))
		}
	})
}

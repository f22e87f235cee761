package harness

import (
	"strings"
	"testing"
)

func TestOpenconnectArgs(t *testing.T) {
	o := Openconnect{User: "u", Password: "pw", Pin: "pin-sha256:x", Ifname: "octun1", Extra: []string{"--script", "/s"}}
	got := strings.Join(o.Args("https://10.0.0.1"), " ")
	want := "openconnect --non-inter -u u --passwd-on-stdin --servercert pin-sha256:x -i octun1 --reconnect-timeout 20 --no-dtls --script /s https://10.0.0.1"
	if got != want {
		t.Errorf("Args:\n got %s\nwant %s", got, want)
	}
	o.DTLS = true
	if got := strings.Join(o.Args("u"), " "); strings.Contains(got, "--no-dtls") {
		t.Errorf("DTLS on, yet: %s", got)
	}
	if o.Stdin() != "pw\n" {
		t.Errorf("Stdin %q", o.Stdin())
	}
}

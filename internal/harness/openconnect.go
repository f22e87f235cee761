package harness

// Openconnect is how the tests and the bench run the stock openconnect
// client: non-interactive, the password on standard input, the server's
// certificate pinned, a tun device of a name unique on the machine, and
// reconnects bounded so that a test's failure does not hang.
type Openconnect struct {
	User, Password string
	Pin            string // pin-sha256 of the server's certificate
	Ifname         string // the tun device (-i)
	// DTLS false passes --no-dtls.
	DTLS bool
	// Extra flags go before the URL (--script, --dtls-ciphers).
	Extra []string
}

// Args is the command line that connects to url.
func (o Openconnect) Args(url string) []string {
	args := []string{"openconnect", "--non-inter", "-u", o.User, "--passwd-on-stdin", "--servercert", o.Pin,
		"-i", o.Ifname, "--reconnect-timeout", "20"}
	if !o.DTLS {
		args = append(args, "--no-dtls")
	}
	args = append(args, o.Extra...)
	return append(args, url)
}

// Stdin is what openconnect reads its password from.
func (o Openconnect) Stdin() string { return o.Password + "\n" }

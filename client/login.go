package client

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"kvpn/cstp"
)

// Logging in and CONNECT: the auth forms filled from the options (or
// asked on the terminal), and the CONNECT request with the extensions a
// kvpn server offered.

// login runs the XML login on c and returns the webvpn cookie. It fills
// every form the server sends (ocserv asks for the username and the
// password in two steps) and fails with ExitAuth when the server asks for
// the password again.
func (o *Options) login(c *conn) (string, error) {
	resp, body, err := c.post("/", cstp.InitRequestGroup(o.Server.String(), "v9.01", o.AuthGroup))
	if err != nil {
		if cerr := certRefusal(err); cerr != err {
			return "", cerr
		}
		return "", withCode(ExitUnreachable, err)
	}
	sentPassword := false
	for range 8 {
		if resp.StatusCode != http.StatusOK {
			return "", withCode(ExitAuth, statusError(resp, "login"))
		}
		msg, err := cstp.ParseServerMessage(body)
		if err != nil {
			return "", withCode(ExitAuth, fmt.Errorf("login: %w", err))
		}
		if msg.Type == "complete" {
			o.extensions = c.extensions
			cookie := c.cookies["webvpn"]
			if cookie == "" {
				return "", withCode(ExitAuth, errors.New("login: server reported success but sent no webvpn cookie"))
			}
			return cookie, nil
		}
		if msg.Type != "auth-request" {
			return "", withCode(ExitAuth, fmt.Errorf("login: unexpected %q document", msg.Type))
		}
		if o.Password == "" && o.AskPassword != nil && formAsksPassword(msg.Inputs) {
			pw, err := o.AskPassword()
			if err != nil {
				return "", withCode(ExitAuth, fmt.Errorf("reading password: %w", err))
			}
			o.Password = pw
		}
		fields, hasPassword := o.fillForm(msg.Inputs)
		if err := o.fillSecondary(fields); err != nil {
			return "", withCode(ExitAuth, err)
		}
		if err := o.pickGroup(fields, msg.Options); err != nil {
			return "", withCode(ExitAuth, err)
		}
		if hasPassword && sentPassword {
			reason := firstNonEmpty(msg.Error, msg.Message, "the server asked again")
			return "", withCode(ExitAuth, fmt.Errorf("authentication failed for user %q: %s", o.User, reason))
		}
		sentPassword = sentPassword || hasPassword
		action := msg.Action
		if action == "" {
			action = "/auth"
		}
		resp, body, err = c.post(action, cstp.AuthReply(fields, msg.Opaque))
		if err != nil {
			return "", withCode(ExitUnreachable, err)
		}
	}
	return "", withCode(ExitAuth, errors.New("login: too many form rounds"))
}

// fillForm answers a login form: text inputs get the username, password
// inputs the password, hidden and select inputs keep their value.
func (o *Options) fillForm(inputs []cstp.FormInput) ([]cstp.FormInput, bool) {
	out := make([]cstp.FormInput, 0, len(inputs))
	hasPassword := false
	for _, in := range inputs {
		switch in.Type {
		case "text":
			in.Value = o.User
		case "password":
			if in.Name == cstp.SecondaryPasswordField {
				break // fillSecondary
			}
			in.Value = o.Password
			hasPassword = true
		}
		out = append(out, in)
	}
	return out, hasPassword
}

// fillSecondary answers a form's second-factor input from AskSecondary.
func (o *Options) fillSecondary(fields []cstp.FormInput) error {
	for i, in := range fields {
		if in.Type != "password" || in.Name != cstp.SecondaryPasswordField {
			continue
		}
		if o.AskSecondary == nil {
			return errors.New("login: the server asks for a second factor (one-time password) and none can be read")
		}
		code, err := o.AskSecondary(in.Label)
		if err != nil {
			return fmt.Errorf("reading the one-time password: %w", err)
		}
		fields[i].Value = code
	}
	return nil
}

// pickGroup sets a form's group list to AuthGroup, which must be offered.
func (o *Options) pickGroup(fields []cstp.FormInput, options map[string][]string) error {
	if o.AuthGroup == "" {
		return nil
	}
	for i, in := range fields {
		if in.Type != "select" || in.Name != "group_list" {
			continue
		}
		if !slices.Contains(options[in.Name], o.AuthGroup) {
			return fmt.Errorf("login: group %q is not offered by the server (offered: %s)", o.AuthGroup, strings.Join(options[in.Name], ", "))
		}
		fields[i].Value = o.AuthGroup
	}
	return nil
}

// formAsksPassword reports whether a login form has a password input
// (other than a second factor's).
func formAsksPassword(inputs []cstp.FormInput) bool {
	for _, in := range inputs {
		if in.Type == "password" && in.Name != cstp.SecondaryPasswordField {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// errCookieRefused means the server no longer knows our session.
var errCookieRefused = errors.New("server refused the session cookie")

// connect sends CONNECT on c and returns the tunnel parameters.
func (o *Options) connect(c *conn, cookie string, prev netip.Addr, prev6 netip.Prefix) (*cstp.TunnelParams, error) {
	req := &cstp.ConnectRequest{
		Cookie:         cookie,
		Hostname:       hostname(),
		BaseMTU:        o.BaseMTU,
		MTU:            o.BaseMTU - 110,
		PrevAddress:    prev,
		PrevAddressIP6: prev6,
	}
	if cstp.HasExtension(o.extensions, cstp.ExtCoalesce) {
		req.Extra = http.Header{}
		req.Extra.Set(cstp.HeaderCoalesce, "1")
	}
	if o.wantGSO() && cstp.HasExtension(o.extensions, cstp.ExtGSO) {
		if req.Extra == nil {
			req.Extra = http.Header{}
		}
		req.Extra.Set(cstp.HeaderGSO, "1")
	}
	if o.wantGSO() && cstp.HasExtension(o.extensions, cstp.ExtGSODown) {
		if req.Extra == nil {
			req.Extra = http.Header{}
		}
		req.Extra.Set(cstp.HeaderGSODown, "1")
	}
	if !o.NoDTLS {
		req.DTLSCipherSuite = "PSK-NEGOTIATE"
		if o.DTLSCID && cstp.HasExtension(o.extensions, cstp.ExtDTLSCID) {
			if req.Extra == nil {
				req.Extra = http.Header{}
			}
			req.Extra.Set(cstp.HeaderDTLSCID, "1")
		}
		if o.DTLSChaCha && cstp.HasExtension(o.extensions, cstp.ExtDTLSChaCha) {
			if req.Extra == nil {
				req.Extra = http.Header{}
			}
			req.Extra.Set(cstp.HeaderDTLSCipher, cstp.ExtDTLSChaCha)
		}
	}
	var b bytes.Buffer
	if err := req.WriteTo(&b, c.host); err != nil {
		return nil, err
	}
	c.rc.SetDeadline(time.Now().Add(exchangeTimeout))
	if _, err := c.rc.Write(b.Bytes()); err != nil {
		return nil, err
	}
	resp, err := cstp.ReadResponse(c.br, http.MethodConnect)
	if err != nil {
		return nil, fmt.Errorf("reading CONNECT answer: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return nil, errCookieRefused
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp, "CONNECT")
	}
	p, err := cstp.ParseTunnelParams(resp.Header)
	if err != nil {
		return nil, err
	}
	// vpnd renews the cookie with the address just assigned (resume.go).
	for _, ck := range resp.Cookies() {
		if ck.Name == "webvpn" && ck.Value != "" {
			c.cookies["webvpn"] = ck.Value
		}
	}
	if p.Extra.Get(cstp.HeaderCoalesce) == "1" {
		c.rc.SetCoalesce(true)
	}
	c.rc.SetDeadline(time.Time{})
	return p, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "kvpn"
	}
	return h
}

package cstp

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// Documents captured from ocserv 1.1.6 (Debian) with plain auth, for the
// user agent "Open AnyConnect VPN Agent v9.01 kvpn".
const (
	ocservUserForm = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-request">
<version who="sg">0.1(1)</version>
<auth id="main">
<message>Please enter your username.</message>
<form method="post" action="/auth">
<input type="text" name="username" label="Username:" />
</form></auth>
</config-auth>`

	ocservPasswordForm = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-request">
<version who="sg">0.1(1)</version>
<auth id="main">
<message>Please enter your password.</message>
<form method="post" action="/auth">
<input type="password" name="password" label="Password:" />
</form></auth>
</config-auth>`

	ocservLoginFailed = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-request">
<version who="sg">0.1(1)</version>
<auth id="main">
<message>Login failed.
Please enter your password.</message>
<form method="post" action="/auth">
<input type="password" name="password" label="Password:" />
</form></auth>
</config-auth>`

	// ocserv writes the configured banner unescaped, so this is not
	// well-formed XML; openconnect parses it with XML_PARSE_RECOVER.
	ocservComplete = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="complete">
<version who="sg">0.1(1)</version>
<auth id="success">
<title>SSL VPN Service</title><banner>Welcome to the test & lab</banner></auth></config-auth>
`

	// What ocserv sends to "Open AnyConnect VPN Agent v3" agents.
	ocservLegacyForm = `<?xml version="1.0" encoding="UTF-8"?>
<auth id="main">
<message>Please enter your username.</message>
<form method="post" action="/auth">
<input type="text" name="username" label="Username:" />
</form></auth>
`
)

// Reconstructed from ocserv's worker-auth.c (select-group configured, and
// a second password from a multi-factor backend).
const (
	ocservGroupForm = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-request">
<version who="sg">0.1(1)</version>
<auth id="main">
<message>Please enter your username.</message>
<form method="post" action="/auth">
<input type="text" name="username" label="Username:" />
<select name="group_list" label="Group:">
<option value="staff">Staff</option>
<option value="admins">Administrators</option>
</select>
</form></auth>
</config-auth>`

	ocservSecondPassword = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-request">
<version who="sg">0.1(1)</version>
<auth id="main">
<message>Enter the code from your token</message>
<form method="post" action="/auth">
<input type="password" name="secondary_password" label="Password2:" />
</form></auth>
</config-auth>`
)

// A Cisco-ASA-style document, after the examples in openconnect's auth.c.
const asaForm = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-request" aggregate-auth-version="2">
<opaque is-for="sg">
<tunnel-group>corp</tunnel-group>
<config-hash>1234567</config-hash>
</opaque>
<auth id="main">
<title>Login</title>
<message>Please enter your username and password.</message>
<error id="88" param1="Bad password" param2="">Login failed: %s</error>
<banner>Authorised users only&nbsp;please</banner>
<form>
<input type="text" name="username" label="Username:"></input>
<input type="password" name="password" label="Password:"></input>
<input type="hidden" name="secret_hidden" value="xyz"></input>
<input type="submit" name="Login" value="Login"></input>
<input name="notype"></input>
<select name="group_list" label="GROUP:">
<option value="corp" selected="true">Corporate</option>
<option>guest</option>
</select>
</form>
</auth>
<session-token>TOKEN123</session-token>
</config-auth>`

func TestParseServerMessageOcserv(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want ServerMessage
	}{
		{"user form", ocservUserForm, ServerMessage{
			Type: "auth-request", AuthID: "main", Message: "Please enter your username.", Action: "/auth",
			Inputs: []FormInput{{Type: "text", Name: "username", Label: "Username:"}},
		}},
		{"password form", ocservPasswordForm, ServerMessage{
			Type: "auth-request", AuthID: "main", Message: "Please enter your password.", Action: "/auth",
			Inputs: []FormInput{{Type: "password", Name: "password", Label: "Password:"}},
		}},
		{"login failed", ocservLoginFailed, ServerMessage{
			Type: "auth-request", AuthID: "main", Message: "Login failed.\nPlease enter your password.", Action: "/auth",
			Inputs: []FormInput{{Type: "password", Name: "password", Label: "Password:"}},
		}},
		{"complete", ocservComplete, ServerMessage{
			Type: "complete", AuthID: "success", Title: "SSL VPN Service", Banner: "Welcome to the test & lab",
		}},
		{"legacy", ocservLegacyForm, ServerMessage{
			Type: "auth-request", AuthID: "main", Message: "Please enter your username.", Action: "/auth",
			Inputs: []FormInput{{Type: "text", Name: "username", Label: "Username:"}},
		}},
		{"group", ocservGroupForm, ServerMessage{
			Type: "auth-request", AuthID: "main", Message: "Please enter your username.", Action: "/auth",
			Inputs: []FormInput{
				{Type: "text", Name: "username", Label: "Username:"},
				{Type: "select", Name: "group_list", Label: "Group:", Value: "staff"},
			},
			Options: map[string][]string{"group_list": {"staff", "admins"}},
		}},
		{"second password", ocservSecondPassword, ServerMessage{
			Type: "auth-request", AuthID: "main", Message: "Enter the code from your token", Action: "/auth",
			Inputs: []FormInput{{Type: "password", Name: "secondary_password", Label: "Password2:"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseServerMessage([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestParseServerMessageASA(t *testing.T) {
	m, err := ParseServerMessage([]byte(asaForm))
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "auth-request" || m.AuthID != "main" || m.Title != "Login" {
		t.Errorf("header fields: %+v", m)
	}
	if m.Error != "Login failed: Bad password" {
		t.Errorf("Error = %q (param1 not substituted?)", m.Error)
	}
	if m.Banner != "Authorised users only\u00a0please" {
		t.Errorf("Banner = %q", m.Banner)
	}
	if m.Action != "/" {
		t.Errorf("Action = %q, want openconnect's default /", m.Action)
	}
	if m.SessionToken != "TOKEN123" {
		t.Errorf("SessionToken = %q", m.SessionToken)
	}
	wantInputs := []FormInput{
		{Type: "text", Name: "username", Label: "Username:"},
		{Type: "password", Name: "password", Label: "Password:"},
		{Type: "hidden", Name: "secret_hidden", Value: "xyz"},
		{Type: "select", Name: "group_list", Label: "GROUP:", Value: "corp"},
	}
	if !reflect.DeepEqual(m.Inputs, wantInputs) {
		t.Errorf("Inputs = %+v", m.Inputs)
	}
	if !reflect.DeepEqual(m.Options["group_list"], []string{"corp", "guest"}) {
		t.Errorf("Options = %v", m.Options)
	}
	wantOpaque := "<opaque is-for=\"sg\">\n<tunnel-group>corp</tunnel-group>\n<config-hash>1234567</config-hash>\n</opaque>"
	if string(m.Opaque) != wantOpaque {
		t.Errorf("Opaque = %q", m.Opaque)
	}

	// The opaque element goes back verbatim, before <auth>.
	reply := string(AuthReply(m.Inputs, m.Opaque))
	if !strings.Contains(reply, wantOpaque+"<auth>") {
		t.Errorf("reply does not echo opaque before <auth>: %s", reply)
	}
}

func TestParseServerMessageErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":        "",
		"html":         "<html><body>Hello</body></html>",
		"text":         "hello world",
		"no auth":      `<?xml version="1.0"?><config-auth client="vpn" type="complete"></config-auth>`,
		"json":         `{"type":"complete"}`,
		"garbage":      "\x00\x01\x02<<<>>>",
		"too big":      "<config-auth>" + strings.Repeat(" ", MaxServerMessage) + "</config-auth>",
		"deep nesting": strings.Repeat("<a>", 1000),
		"end tag only": "</auth>",
	} {
		if m, err := ParseServerMessage([]byte(doc)); err == nil {
			t.Errorf("%s: parsed as %+v", name, m)
		}
	}
}

func TestServerDocumentsRoundTrip(t *testing.T) {
	m, err := ParseServerMessage(AuthForm("Please log in.", "", true, true))
	if err != nil {
		t.Fatal(err)
	}
	want := ServerMessage{
		Type: "auth-request", AuthID: "main", Title: "Login", Message: "Please log in.", Action: "/auth",
		Inputs: []FormInput{
			{Type: "text", Name: "username", Label: "Username:"},
			{Type: "password", Name: "password", Label: "Password:"},
		},
	}
	if !reflect.DeepEqual(*m, want) {
		t.Errorf("got  %+v\nwant %+v", *m, want)
	}

	// Hostile text is escaped, and '%' survives openconnect's %s handling.
	msg, errMsg := `<b>"Tom" & 'Jerry'</b>`, "Login failed: 100% <wrong> %s & %d"
	doc := AuthForm(msg, errMsg, true, true)
	if !bytes.Contains(doc, []byte(`id="88"`)) {
		t.Errorf("no error id in %s", doc)
	}
	m, err = ParseServerMessage(doc)
	if err != nil {
		t.Fatal(err)
	}
	if m.Message != msg || m.Error != errMsg {
		t.Errorf("Message = %q, Error = %q", m.Message, m.Error)
	}
	if _, err := parseXMLTree(doc, true); err != nil {
		t.Errorf("AuthForm output is not well-formed: %v\n%s", err, doc)
	}

	doc = AuthComplete("Welcome & enjoy")
	if _, err := parseXMLTree(doc, true); err != nil {
		t.Errorf("AuthComplete output is not well-formed: %v\n%s", err, doc)
	}
	m, err = ParseServerMessage(doc)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "complete" || m.AuthID != "success" || m.Message != "Welcome & enjoy" || len(m.Inputs) != 0 {
		t.Errorf("AuthComplete parsed as %+v", m)
	}
	if !bytes.HasPrefix(doc, []byte("<?xml")) || !bytes.HasPrefix(AuthForm("", "", true, true), []byte("<?xml")) {
		t.Error("documents must start with <?xml (openconnect checks the prefix)")
	}
}

func TestExpandMsg(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`<m>plain</m>`, "plain"},
		{`<m param1="A">x %s y</m>`, "x A y"},
		{`<m param1="A" param2="B">%s-%s-%s</m>`, "A-B-%s"},
		{`<m param2="B">%s %s</m>`, "%s B"},
		{`<m param1="A">100% %s</m>`, "100% %s"}, // openconnect stops at a bare %
		{`<m param1="A">%</m>`, "%"},
	} {
		n, err := parseXMLTree([]byte(tc.doc), true)
		if err != nil {
			t.Fatal(err)
		}
		if got := expandMsg(n); got != tc.want {
			t.Errorf("expandMsg(%s) = %q, want %q", tc.doc, got, tc.want)
		}
	}
}

package cstp

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
)

// Login documents travel as HTTP bodies on the TLS connection (see
// openconnect auth.c and ocserv worker-auth.c). The HTTP exchange itself,
// including cookies, is left to the caller:
//
//   - the client POSTs InitRequest to "/" and then AuthReply to the form's
//     action, with Content-Type "application/xml; charset=utf-8" (what
//     openconnect 9 sends) and the headers X-Transcend-Version: 1,
//     X-Aggregate-Auth: 1 and X-Support-HTTP-Auth: true;
//   - the server answers 200 with Content-Type text/xml and an
//     AuthForm, or AuthComplete plus "Set-Cookie: webvpn=TOKEN",
//     which is the cookie the client presents on CONNECT;
//   - ocserv asks for the username and the password in two rounds (two
//     forms with one input each) and links them with a "webvpncontext"
//     cookie that the client must send back. A wrong password gets the
//     password form again with "Login failed." in its message; other
//     failures get a 401 with an X-Reason header and a closed connection.

// Size limits for login documents. Real ones are well under 4 KiB; a Cisco
// ASA's documents (profiles, host-scan) are the largest seen in the wild.
const (
	MaxClientMessage = 64 << 10
	MaxServerMessage = 1 << 20
)

// clientVersion is the <version who="vpn"> sent in auth replies. Servers
// only log it.
const clientVersion = "kvpn"

// ClientMessage is a login request from a client, as received by a server.
type ClientMessage struct {
	Type        string // "init", "auth-reply", or "logout"
	GroupAccess string // <group-access>: the URL the client was pointed at
	// GroupSelect is the chosen group: <group-select> in XML (openconnect
	// --authgroup, or a "group_list" select), "group_list" in a form body.
	GroupSelect        string
	Username, Password string
	// SessionToken is a top-level <session-token> (sent with "logout").
	SessionToken string
	// Fields holds every child of <auth> by element name (or every form
	// key), for multi-step forms. It is never nil.
	Fields map[string]string
}

// ParseClientMessage parses the body of a login POST. XML bodies must have
// a <config-auth> root; the body is recognised as XML by its content, not by
// contentType, because old openconnect releases label XML as
// form-urlencoded. A body that is not XML is accepted as form-urlencoded
// ("username=..&password=..", Type "auth-reply", as openconnect's non-XML
// mode and ocserv accept) when contentType says so.
func ParseClientMessage(contentType string, body []byte) (*ClientMessage, error) {
	if len(body) > MaxClientMessage {
		return nil, fmt.Errorf("cstp: client message of %d bytes exceeds %d", len(body), MaxClientMessage)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n\ufeff")
	if len(trimmed) > 0 && trimmed[0] == '<' {
		return parseClientXML(body)
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/x-www-form-urlencoded" {
		return parseClientForm(body)
	}
	if len(trimmed) == 0 {
		return nil, errors.New("cstp: empty client message")
	}
	return nil, fmt.Errorf("cstp: client message is not XML (Content-Type %q)", contentType)
}

func parseClientXML(body []byte) (*ClientMessage, error) {
	root, err := parseXMLTree(body, true)
	if err != nil {
		return nil, fmt.Errorf("cstp: client message: %w", err)
	}
	if root.name != "config-auth" {
		return nil, fmt.Errorf("cstp: client message: root element is <%s>, want <config-auth>", root.name)
	}
	m := &ClientMessage{Fields: map[string]string{}}
	m.Type, _ = root.attr("type")
	if m.Type == "" {
		return nil, errors.New("cstp: client message: <config-auth> has no type")
	}
	for _, c := range root.children {
		switch c.name {
		case "group-access":
			m.GroupAccess = c.content()
		case "group-select":
			m.GroupSelect = c.content()
		case "session-token":
			m.SessionToken = c.content()
		case "auth":
			for _, f := range c.children {
				if _, dup := m.Fields[f.name]; !dup {
					m.Fields[f.name] = f.content()
				}
			}
		}
	}
	m.Username = m.Fields["username"]
	m.Password = m.Fields["password"]
	return m, nil
}

func parseClientForm(body []byte) (*ClientMessage, error) {
	q, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("cstp: client message: bad form encoding: %w", err)
	}
	m := &ClientMessage{Type: "auth-reply", Fields: make(map[string]string, len(q))}
	for k, v := range q {
		m.Fields[k] = v[0]
	}
	m.Username = m.Fields["username"]
	m.Password = m.Fields["password"]
	m.GroupSelect = m.Fields["group_list"]
	return m, nil
}

// appendFormHead starts login form id ("main" unless a later step's)
// posted to /auth: the document, its title, message shown as information,
// and a non-empty errMsg as <error> (openconnect prints it as an error
// before prompting again). The caller adds the inputs and closes the form.
func appendFormHead(id, message, errMsg string) []byte {
	b := make([]byte, 0, 512)
	b = append(b, xmlDecl...)
	b = append(b, `<config-auth client="vpn" type="auth-request" aggregate-auth-version="2">`+"\n"...)
	b = append(b, `<auth id="`...)
	b = appendAttr(b, id)
	b = append(b, "\">\n<title>Login</title>\n"...)
	if message != "" {
		b = appendMsgElem(b, "message", "", message)
	}
	if errMsg != "" {
		b = appendMsgElem(b, "error", ` id="88"`, errMsg)
	}
	b = append(b, `<form method="post" action="/auth">`+"\n"...)
	return b
}

// AuthForm renders the server's login form, posted to /auth, asking for
// the username, the password, both or neither. openconnect (auth.c
// parse_form) prompts for every text and password input of a form in one
// go and fills "username" and the first password input from its -u and
// --passwd-on-stdin options. message is shown as information; a non-empty
// errMsg is rendered as <error>, which openconnect prints as an error
// before prompting again. A server that takes the user name from a client
// certificate asks only for the password (or, refusing a login, for
// nothing).
func AuthForm(message, errMsg string, username, password bool) []byte {
	b := appendFormHead("main", message, errMsg)
	if username {
		b = append(b, `<input type="text" name="username" label="Username:" />`+"\n"...)
	}
	if password {
		b = append(b, `<input type="password" name="password" label="Password:" />`+"\n"...)
	}
	b = append(b, "</form>\n</auth>\n</config-auth>\n"...)
	return b
}

// AuthComplete renders the login success document. openconnect only needs
// <auth id="success"> (auth.c handle_auth_form) and takes the session
// cookie from the "webvpn" Set-Cookie header of the same response, which
// the caller must send.
func AuthComplete(message string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, xmlDecl...)
	b = append(b, `<config-auth client="vpn" type="complete" aggregate-auth-version="2">`+"\n"...)
	b = append(b, `<auth id="success">`+"\n"...)
	b = append(b, "<title>Login</title>\n"...)
	if message != "" {
		b = appendMsgElem(b, "message", "", message)
	}
	b = append(b, "</auth>\n</config-auth>\n"...)
	return b
}

// InitRequest renders the client's first login POST, as openconnect's
// xmlpost_initial_req does. groupAccess is the URL the user gave (e.g.
// "https://vpn.example.com"); version is reported as <version who="vpn">.
func InitRequest(groupAccess, version string) []byte {
	return InitRequestGroup(groupAccess, version, "")
}

// InitRequestGroup is InitRequest naming the group to log in to, as
// openconnect --authgroup sends it (<group-select>); "" for none.
func InitRequestGroup(groupAccess, version, group string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, xmlDecl...)
	b = append(b, `<config-auth client="vpn" type="init" aggregate-auth-version="2">`...)
	b = append(b, `<version who="vpn">`...)
	b = appendText(b, version)
	b = append(b, `</version><device-id>linux-64</device-id>`...)
	b = appendElem(b, "group-access", groupAccess)
	if group != "" {
		b = appendElem(b, "group-select", group)
	}
	b = append(b, "</config-auth>\n"...)
	return b
}

// FormInput is one input of a server's login form, or (in AuthReply) one
// answer to it.
type FormInput struct{ Type, Name, Label, Value string } // Type: text, password, hidden, select...

// ServerMessage is a login document from a server, as received by a client.
type ServerMessage struct {
	Type    string // "auth-request" or "complete"
	AuthID  string // <auth id="...">: "main", "success", ...
	Message string
	Error   string
	Action  string // form action, e.g. "/auth"
	Inputs  []FormInput
	// Opaque is the raw <opaque> element if present. Cisco ASAs send one
	// and expect it back verbatim in the reply (openconnect copies it,
	// auth.c xmlpost_append_form_opts); ocserv never sends one.
	Opaque []byte

	Title  string
	Banner string
	// SessionToken is a top-level <session-token>; openconnect uses it as
	// the cookie when the server sends no webvpn Set-Cookie.
	SessionToken string
	// Options lists the option values of each <select> input, by name. The
	// input's Value is the option marked selected="true", else the first.
	Options map[string][]string
}

// ParseServerMessage parses a login document from a server. Like
// openconnect's parser it is lenient about XML syntax and accepts both the
// <config-auth> document and a bare legacy <auth> document (which ocserv
// sends to "Open AnyConnect VPN Agent v3" user agents). It fails if the
// document has no <auth> element.
func ParseServerMessage(body []byte) (*ServerMessage, error) {
	if len(body) > MaxServerMessage {
		return nil, fmt.Errorf("cstp: server message of %d bytes exceeds %d", len(body), MaxServerMessage)
	}
	root, err := parseXMLTree(body, false)
	if err != nil {
		return nil, fmt.Errorf("cstp: server message: %w", err)
	}
	m := &ServerMessage{}
	var auth *xmlNode
	switch root.name {
	case "config-auth":
		m.Type, _ = root.attr("type")
		for _, c := range root.children {
			switch c.name {
			case "auth":
				if auth == nil {
					auth = c
				}
			case "opaque":
				if c.end > c.start {
					m.Opaque = bytes.Clone(body[c.start:c.end])
				}
			case "session-token":
				m.SessionToken = c.content()
			case "error":
				m.Error = trimText(expandMsg(c))
			}
		}
	case "auth":
		auth = root
	default:
		return nil, fmt.Errorf("cstp: server message: root element is <%s>, want <config-auth>", root.name)
	}
	if auth == nil {
		return nil, errors.New(`cstp: server message has no <auth> element`)
	}
	m.AuthID, _ = auth.attr("id")
	for _, c := range auth.children {
		switch c.name {
		case "title":
			m.Title = trimText(c.content())
		case "banner":
			m.Banner = trimText(expandMsg(c))
		case "message":
			m.Message = trimText(expandMsg(c))
		case "error":
			m.Error = trimText(expandMsg(c))
		case "form":
			m.parseForm(c)
		}
	}
	if m.Type == "" {
		if m.AuthID == "success" {
			m.Type = "complete"
		} else {
			m.Type = "auth-request"
		}
	}
	return m, nil
}

// parseForm collects the inputs of a <form> the way openconnect's
// parse_form does: inputs without a type or name, and submit/reset
// buttons, are skipped.
func (m *ServerMessage) parseForm(form *xmlNode) {
	m.Action, _ = form.attr("action")
	if m.Action == "" {
		// openconnect's default for XML POST forms that omit the action.
		m.Action = "/"
	}
	for _, c := range form.children {
		switch c.name {
		case "input":
			typ, _ := c.attr("type")
			name, _ := c.attr("name")
			if typ == "" || name == "" || typ == "submit" || typ == "reset" {
				continue
			}
			label, _ := c.attr("label")
			value, _ := c.attr("value")
			m.Inputs = append(m.Inputs, FormInput{Type: typ, Name: name, Label: label, Value: value})
		case "select":
			name, _ := c.attr("name")
			if name == "" {
				continue
			}
			label, _ := c.attr("label")
			in := FormInput{Type: "select", Name: name, Label: label}
			var opts []string
			for _, o := range c.children {
				if o.name != "option" {
					continue
				}
				v, ok := o.attr("value")
				if !ok {
					v = o.content()
				}
				if sel, _ := o.attr("selected"); sel == "true" || len(opts) == 0 {
					in.Value = v
				}
				opts = append(opts, v)
			}
			if m.Options == nil {
				m.Options = map[string][]string{}
			}
			m.Options[name] = opts
			m.Inputs = append(m.Inputs, in)
		}
	}
}

func trimText(s string) string { return strings.TrimSpace(s) }

// AuthReply renders the client's answer to a form: <auth> with one
// <NAME>VALUE</NAME> child per field, in order, preceded by the server's
// opaque element if non-nil, as openconnect's xmlpost_append_form_opts
// does. Like openconnect it moves a "group_list" answer to a top-level
// <group-select>, which is where ocserv looks for the group. Fields whose
// name is not a plain XML name are dropped rather than letting a hostile
// server inject markup.
func AuthReply(fields []FormInput, opaque []byte) []byte {
	b := make([]byte, 0, 512)
	b = append(b, xmlDecl...)
	b = append(b, `<config-auth client="vpn" type="auth-reply" aggregate-auth-version="2">`...)
	b = append(b, `<version who="vpn">`+clientVersion+`</version><device-id>linux-64</device-id>`...)
	if opaque != nil {
		b = append(b, opaque...)
	}
	b = append(b, "<auth>"...)
	group, haveGroup := "", false
	for _, f := range fields {
		if f.Name == "group_list" {
			group, haveGroup = f.Value, true
			continue
		}
		if !isXMLName(f.Name) {
			continue
		}
		b = appendElem(b, f.Name, f.Value)
	}
	b = append(b, "</auth>"...)
	if haveGroup {
		b = appendElem(b, "group-select", group)
	}
	b = append(b, "</config-auth>\n"...)
	return b
}

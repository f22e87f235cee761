package cstp

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// Client documents as openconnect 9.01 writes them (libxml2
// xmlDocDumpMemoryEnc: declaration, newline, then the tree unindented).
const (
	openconnectInit = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="init" aggregate-auth-version="2"><version who="vpn">v9.01-3</version><device-id>linux-64</device-id><group-access>https://vpn.example.com:4443/</group-access></config-auth>
`
	openconnectReply = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-reply" aggregate-auth-version="2"><version who="vpn">v9.01-3</version><device-id>linux-64</device-id><auth><username>alice</username><password>p&amp;ss&lt;w&gt;rd"'</password></auth><group-select>staff</group-select></config-auth>
`
	openconnectLogout = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="logout"><session-token>abc</session-token></config-auth>`
)

func TestParseClientMessage(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		want           ClientMessage
	}{
		{"init", "application/xml; charset=utf-8", openconnectInit, ClientMessage{
			Type: "init", GroupAccess: "https://vpn.example.com:4443/", Fields: map[string]string{},
		}},
		{"reply", "application/xml; charset=utf-8", openconnectReply, ClientMessage{
			Type: "auth-reply", GroupSelect: "staff", Username: "alice", Password: `p&ss<w>rd"'`,
			Fields: map[string]string{"username": "alice", "password": `p&ss<w>rd"'`},
		}},
		// Old openconnect labels XML as form-urlencoded.
		{"xml labelled as form", "application/x-www-form-urlencoded", openconnectReply, ClientMessage{
			Type: "auth-reply", GroupSelect: "staff", Username: "alice", Password: `p&ss<w>rd"'`,
			Fields: map[string]string{"username": "alice", "password": `p&ss<w>rd"'`},
		}},
		{"logout", "application/xml", openconnectLogout, ClientMessage{
			Type: "logout", SessionToken: "abc", Fields: map[string]string{},
		}},
		{"form", "application/x-www-form-urlencoded", "username=bob&password=a%26b%3Dc+d&group_list=admins", ClientMessage{
			Type: "auth-reply", GroupSelect: "admins", Username: "bob", Password: "a&b=c d",
			Fields: map[string]string{"username": "bob", "password": "a&b=c d", "group_list": "admins"},
		}},
		{"multi-step", "text/xml", `<?xml version="1.0"?><config-auth client="vpn" type="auth-reply"><auth><secondary_password>123456</secondary_password></auth></config-auth>`, ClientMessage{
			Type: "auth-reply", Fields: map[string]string{"secondary_password": "123456"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseClientMessage(tc.ct, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestParseClientMessageErrors(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body, wantErr string
	}{
		{"empty", "application/xml", "", "empty"},
		{"not xml", "application/xml", "hello", "not XML"},
		{"json", "application/json", `{"username":"x"}`, "not XML"},
		{"wrong root", "application/xml", `<?xml version="1.0"?><auth><username>x</username></auth>`, "want <config-auth>"},
		{"html", "text/html", `<html><body>hi</body></html>`, "want <config-auth>"},
		{"no type", "application/xml", `<config-auth client="vpn"></config-auth>`, "no type"},
		{"truncated", "application/xml", `<?xml version="1.0"?><config-auth type="init"><group-access>x`, "XML"},
		{"mismatched", "application/xml", `<config-auth type="init"><a></b></config-auth>`, "malformed"},
		{"bad entity", "application/xml", `<config-auth type="init">&nbsp;</config-auth>`, "malformed"},
		{"garbage", "application/xml", "<\x00\x01\x02", "XML"},
		{"huge", "application/xml", `<config-auth type="init">` + strings.Repeat("x", MaxClientMessage) + `</config-auth>`, "exceeds"},
		{"deep", "application/xml", `<config-auth type="init">` + strings.Repeat("<a>", 100), "nested"},
		{"bad form", "application/x-www-form-urlencoded", "username=%zz", "form"},
	} {
		_, err := ParseClientMessage(tc.ct, []byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestInitRequest(t *testing.T) {
	doc := InitRequest("https://vpn.example.com/?a=1&b=<2>", "v9.01-kvpn")
	if !bytes.HasPrefix(doc, []byte("<?xml")) {
		t.Errorf("no XML declaration (ocserv needs it): %s", doc)
	}
	m, err := ParseClientMessage("application/xml; charset=utf-8", doc)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "init" || m.GroupAccess != "https://vpn.example.com/?a=1&b=<2>" {
		t.Errorf("parsed %+v", m)
	}
	// ocserv's first round looks for <username> and must not find one.
	if bytes.Contains(doc, []byte("<username>")) {
		t.Error("init request contains <username>")
	}
}

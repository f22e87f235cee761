package cstp

import (
	"reflect"
	"strings"
	"testing"
)

// ocservField mimics ocserv's parse_reply and match_password_in_reply
// (worker-auth.c): a case-insensitive search for "<name>" (or, for the
// password, "<password" or "_password>"), the text up to the next "</",
// then unescape_html, which knows only named entities.
func ocservField(body, name string) (string, bool) {
	lower := strings.ToLower(body)
	var i int
	if name == "password" {
		i = strings.Index(lower, "<password")
		if i < 0 {
			i = strings.Index(lower, "_password>")
		}
		if i < 0 {
			return "", false
		}
		i += strings.IndexByte(body[i:], '>') + 1
	} else {
		i = strings.Index(lower, "<"+name+">")
		if i < 0 {
			return "", false
		}
		i += len(name) + 2
	}
	end := strings.Index(body[i:], "</")
	if end < 0 {
		return "", false
	}
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&nbsp;", " ", "&quot;", `"`, "&amp;", "&", "&apos;", "'")
	return r.Replace(body[i : i+end]), true
}

func TestAuthReplyOcservCompatible(t *testing.T) {
	hard := `p&ss<w>rd "quoted" 'single' 100% é`
	doc := string(AuthReply([]FormInput{{Type: "password", Name: "password", Value: hard}}, nil))
	if !strings.HasPrefix(doc, "<?xml") {
		t.Errorf("no XML declaration (ocserv needs it): %s", doc)
	}
	if got, ok := ocservField(doc, "password"); !ok || got != hard {
		t.Errorf("ocserv would read password %q, want %q\n%s", got, hard, doc)
	}
	// The same document is proper XML for openconnect-style servers.
	m, err := ParseClientMessage("application/xml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "auth-reply" || m.Password != hard {
		t.Errorf("parsed %+v", m)
	}

	// Step one with a group selection, as ocserv's select form asks.
	doc = string(AuthReply([]FormInput{
		{Type: "text", Name: "username", Value: "alice"},
		{Type: "select", Name: "group_list", Value: "staff"},
	}, nil))
	if got, _ := ocservField(doc, "username"); got != "alice" {
		t.Errorf("ocserv would read username %q", got)
	}
	if got, _ := ocservField(doc, "group-select"); got != "staff" {
		t.Errorf("ocserv would read group %q\n%s", got, doc)
	}
	if strings.Contains(doc, "<group_list>") {
		t.Errorf("group_list left inside <auth>: %s", doc)
	}

	// Secondary password, found through "_password>".
	doc = string(AuthReply([]FormInput{{Type: "password", Name: "secondary_password", Value: "123456"}}, nil))
	if got, _ := ocservField(doc, "password"); got != "123456" {
		t.Errorf("ocserv would read secondary password %q\n%s", got, doc)
	}
}

func TestAuthReplyDropsBadNames(t *testing.T) {
	doc := AuthReply([]FormInput{
		{Name: "ok_name-1.x", Value: "1"},
		{Name: `x><evil`, Value: "2"},
		{Name: "", Value: "3"},
		{Name: "1abc", Value: "4"},
		{Name: "ns:tag", Value: "5"},
	}, nil)
	m, err := ParseClientMessage("application/xml", doc)
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	if !reflect.DeepEqual(m.Fields, map[string]string{"ok_name-1.x": "1"}) {
		t.Errorf("Fields = %v", m.Fields)
	}
}

func TestEscaping(t *testing.T) {
	in := "a\x00b\x1fc\td\re\n\xff"
	text := string(appendText(nil, in))
	if text != "a\uFFFDb\uFFFDc\td&#xD;e\n\uFFFD" {
		t.Errorf("appendText = %q", text)
	}
	attr := string(appendAttr(nil, in+`"<>&`))
	if attr != "a\uFFFDb\uFFFDc&#x9;d&#xD;e&#xA;\uFFFD&quot;&lt;&gt;&amp;" {
		t.Errorf("appendAttr = %q", attr)
	}
}

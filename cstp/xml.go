package cstp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// maxXMLDepth bounds element nesting in parsed login documents. Real ones
// are four levels deep (config-auth/auth/form/select); the bound keeps a
// hostile peer from making us build a pathological tree.
const maxXMLDepth = 64

// xmlNode is a minimal DOM for the small login documents: parsing into a
// tree keeps the openconnect-style "walk the children" logic simple.
type xmlNode struct {
	name     string // local name; namespace prefixes are ignored
	attrs    []xml.Attr
	text     []byte // character data directly inside the element
	children []*xmlNode
	// start and end are the byte offsets of the element in the input; end
	// is 0 if the element was never closed (lenient parsing only).
	start, end int64
}

func (n *xmlNode) attr(name string) (string, bool) {
	for _, a := range n.attrs {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

// content returns the text of the element and its descendants, like
// libxml2's xmlNodeGetContent which openconnect uses.
func (n *xmlNode) content() string {
	if len(n.children) == 0 {
		return string(n.text)
	}
	var sb strings.Builder
	n.appendContent(&sb)
	return sb.String()
}

func (n *xmlNode) appendContent(sb *strings.Builder) {
	sb.Write(n.text)
	for _, c := range n.children {
		c.appendContent(sb)
	}
}

// parseXMLTree parses body into a tree rooted at its first element. In
// strict mode the document must be well-formed; in lenient mode (used for
// server documents, which openconnect parses with XML_PARSE_RECOVER) HTML
// entities, unquoted attributes and unclosed elements are tolerated.
// Anything after the root element is ignored.
func parseXMLTree(body []byte, strict bool) (*xmlNode, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = strict
	if !strict {
		d.Entity = xml.HTMLEntity
	}
	var root *xmlNode
	var stack []*xmlNode
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			if root == nil {
				return nil, fmt.Errorf("not an XML document: %w", err)
			}
			return nil, fmt.Errorf("malformed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) >= maxXMLDepth {
				return nil, fmt.Errorf("XML nested deeper than %d elements", maxXMLDepth)
			}
			n := &xmlNode{name: t.Name.Local, attrs: t.Attr, start: off}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, errors.New("malformed XML: unexpected end element")
			}
			n := stack[len(stack)-1]
			n.end = d.InputOffset()
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return root, nil
			}
		case xml.CharData:
			if len(stack) > 0 {
				top := stack[len(stack)-1]
				top.text = append(top.text, t...)
			} else if len(bytes.Trim(t, " \t\r\n\ufeff")) > 0 {
				return nil, errors.New("not an XML document: text outside the root element")
			}
		}
	}
	if root == nil {
		return nil, errors.New("not an XML document: no root element")
	}
	if strict {
		return nil, errors.New("malformed XML: unexpected end of document")
	}
	return root, nil
}

// xmlDecl starts every document we render. ocserv decides between its XML
// and form-urlencoded parsers by searching the body for "<?xml"
// (worker-auth.c parse_reply), so client documents must carry it.
const xmlDecl = `<?xml version="1.0" encoding="UTF-8"?>` + "\n"

// appendText appends s escaped as XML character data. Only &, < and > are
// escaped, and only with named entities: ocserv extracts field values with
// a plain string search and its unescape_html knows &lt; &gt; &amp; &quot;
// &apos; &nbsp; but no numeric references, so a password containing a quote
// must be sent as a raw quote. Characters not allowed in XML are replaced by
// U+FFFD, as encoding/xml does; a carriage return is sent as &#xD; because
// a raw one would be turned into a newline by any real XML parser.
func appendText(b []byte, s string) []byte { return appendEscaped(b, s, false) }

// appendAttr appends s escaped for use inside a double-quoted attribute.
// Whitespace control characters are escaped so that attribute value
// normalisation does not turn them into spaces.
func appendAttr(b []byte, s string) []byte { return appendEscaped(b, s, true) }

// appendEscaped is appendText, or with attr appendAttr: the same escapes,
// and in an attribute also the quote and the whitespace controls.
func appendEscaped(b []byte, s string, attr bool) []byte {
	for _, r := range s {
		switch {
		case r == '&':
			b = append(b, "&amp;"...)
		case r == '<':
			b = append(b, "&lt;"...)
		case r == '>':
			b = append(b, "&gt;"...)
		case attr && r == '"':
			b = append(b, "&quot;"...)
		case attr && r == '\t':
			b = append(b, "&#x9;"...)
		case attr && r == '\n':
			b = append(b, "&#xA;"...)
		case r == '\r':
			b = append(b, "&#xD;"...)
		case !isXMLChar(r):
			b = utf8.AppendRune(b, utf8.RuneError)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return b
}

// isXMLChar reports whether r may appear in an XML 1.0 document.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// isXMLName reports whether s is safe to use as an element name. It accepts
// a conservative ASCII subset (no namespace colon), which covers every form
// field name openconnect and ocserv use.
func isXMLName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// appendElem appends <name>escaped text</name>.
func appendElem(b []byte, name, text string) []byte {
	b = append(b, '<')
	b = append(b, name...)
	b = append(b, '>')
	b = appendText(b, text)
	b = append(b, "</"...)
	b = append(b, name...)
	return append(b, '>')
}

// appendMsgElem appends a <message> or <error> element. openconnect
// (auth.c xmlnode_msg) treats the element text as a format in which up to
// two "%s" are replaced by the param1 and param2 attributes, and stops at
// any other '%'. So text containing '%' is sent as param1 of a bare "%s",
// which every such client shows verbatim.
func appendMsgElem(b []byte, name, attrs, text string) []byte {
	b = append(b, '<')
	b = append(b, name...)
	b = append(b, attrs...)
	if strings.Contains(text, "%") {
		b = append(b, ` param1="`...)
		b = appendAttr(b, text)
		b = append(b, `">%s</`...)
	} else {
		b = append(b, '>')
		b = appendText(b, text)
		b = append(b, "</"...)
	}
	b = append(b, name...)
	return append(b, ">\n"...)
}

// expandMsg applies openconnect's param1/param2 substitution to the text of
// a <message> or <error> element (see appendMsgElem).
func expandMsg(n *xmlNode) string {
	text := n.content()
	var params [2]string
	var have [2]bool
	params[0], have[0] = n.attr("param1")
	params[1], have[1] = n.attr("param2")
	if !have[0] && !have[1] {
		return text
	}
	var sb strings.Builder
	nr := 0
	for nr < 2 {
		i := strings.IndexByte(text, '%')
		if i < 0 || i+1 >= len(text) || text[i+1] != 's' {
			break
		}
		sb.WriteString(text[:i])
		if have[nr] {
			sb.WriteString(params[nr])
		} else {
			sb.WriteString("%s")
		}
		text = text[i+2:]
		nr++
	}
	sb.WriteString(text)
	return sb.String()
}

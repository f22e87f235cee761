package radius

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
)

// Request is one authentication attempt.
type Request struct {
	User, Password string
	// State is the State of the Access-Challenge this answers, nil on
	// a first attempt.
	State []byte
	// CallingStationID is the client's address (Calling-Station-Id).
	CallingStationID string
}

// Outcome is what the server answered.
type Outcome int

// Outcomes.
const (
	Reject Outcome = iota
	Accept
	Challenge
)

func (o Outcome) String() string {
	switch o {
	case Accept:
		return "accept"
	case Challenge:
		return "challenge"
	}
	return "reject"
}

// Result is the server's answer to a Request.
type Result struct {
	Outcome Outcome
	// Message is the Reply-Message text, lines joined.
	Message string
	// State is the Access-Challenge's State, to send back.
	State []byte
	// Settings are the Access-Accept's session settings.
	Settings *Settings
	Server   string // the server that answered
}

// MaxState bounds the State kept for a challenge.
const MaxState = 253

// Authenticate sends an Access-Request for r and returns the answer. An
// Access-Accept whose attributes cannot be applied is an error
// (*AttrError). An error means the login cannot go on: no server
// answered (ErrNoAnswer) or the answer was unusable.
func (c *Client) Authenticate(ctx context.Context, r Request) (*Result, error) {
	p := layeh.New(layeh.CodeAccessRequest, c.cfg.Secret)
	// Message-Authenticator first (as FreeRADIUS's radclient puts it),
	// filled in by encode.
	p.Add(msgAuthType, make(layeh.Attribute, 16))
	if err := rfc2865.UserName_SetString(p, r.User); err != nil {
		return nil, fmt.Errorf("User-Name: %w", err)
	}
	if err := rfc2865.UserPassword_SetString(p, r.Password); err != nil {
		return nil, fmt.Errorf("User-Password: %w", err)
	}
	c.addNAS(p)
	rfc2865.ServiceType_Set(p, rfc2865.ServiceType_Value_FramedUser)
	rfc2865.FramedProtocol_Set(p, rfc2865.FramedProtocol_Value_PPP)
	rfc2865.NASPortType_Set(p, rfc2865.NASPortType_Value_Virtual)
	if r.CallingStationID != "" {
		rfc2865.CallingStationID_SetString(p, r.CallingStationID)
	}
	if r.State != nil {
		rfc2865.State_Set(p, r.State)
	}
	reply, server, err := c.exchange(ctx, p, c.cfg.Auth, &c.prefAuth)
	if err != nil {
		return nil, err
	}
	res := &Result{Server: server, Message: replyMessage(reply)}
	switch reply.Code {
	case layeh.CodeAccessAccept:
		c.Counters.Accepts.Add(1)
		res.Outcome = Accept
		set, err := ParseAccept(reply.Attributes, c.cfg.GroupFromClass)
		if err != nil {
			c.Counters.BadAttributes.Add(1)
			return nil, err
		}
		c.Counters.IgnoredAttributes.Add(uint64(len(set.Ignored)))
		res.Settings = set
	case layeh.CodeAccessChallenge:
		c.Counters.Challenges.Add(1)
		res.Outcome = Challenge
		st, _ := rfc2865.State_Lookup(reply)
		if len(st) == 0 || len(st) > MaxState {
			c.Counters.BadAttributes.Add(1)
			return nil, &AttrError{Attr: "State", Err: fmt.Errorf("an Access-Challenge needs a State of 1..%d bytes, got %d", MaxState, len(st))}
		}
		res.State = st
	default:
		c.Counters.Rejects.Add(1)
		res.Outcome = Reject
	}
	return res, nil
}

// addNAS adds NAS-Identifier and NAS-IP-Address.
func (c *Client) addNAS(p *layeh.Packet) {
	rfc2865.NASIdentifier_SetString(p, c.cfg.NASIdentifier)
	if a := c.cfg.NASIP; a.IsValid() {
		if a.Is4() {
			rfc2865.NASIPAddress_Set(p, net.IP(a.AsSlice()))
		} else {
			p.Set(95, layeh.Attribute(a.AsSlice())) // NAS-IPv6-Address (RFC 3162)
		}
	}
}

// replyMessage joins the Reply-Message attributes, keeping printable text.
func replyMessage(p *layeh.Packet) string {
	var parts []string
	for _, a := range p.Attributes {
		if a.Type == rfc2865.ReplyMessage_Type {
			parts = append(parts, string(a.Attribute))
		}
	}
	s := strings.Join(parts, "")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || (r >= 0x20 && r != 0x7f && r != 0xfffd) {
			return r
		}
		return -1
	}, strings.TrimSpace(s))
}

// CallingStationID is the Calling-Station-Id of a client address.
func CallingStationID(a netip.Addr) string { return a.Unmap().String() }

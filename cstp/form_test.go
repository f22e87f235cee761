package cstp

import (
	"slices"
	"testing"
)

// TestLoginFormRoundTrip: the group list and the second-factor input
// parse back as a client sees them.
func TestLoginFormRoundTrip(t *testing.T) {
	f := &LoginForm{
		Message: "Please enter your username and password.", Username: true, Password: true,
		Groups:   []GroupOption{{Name: "DEFAULT"}, {Name: "eng", Label: "Engineering & <ops>"}, {Name: "sales"}},
		Selected: "eng",
	}
	m, err := ParseServerMessage(f.Render())
	if err != nil {
		t.Fatal(err)
	}
	if m.AuthID != "main" || m.Inputs[0].Type != "select" || m.Inputs[0].Name != "group_list" || m.Inputs[0].Value != "eng" {
		t.Fatalf("group select: %+v", m.Inputs)
	}
	if got := m.Options["group_list"]; !slices.Equal(got, []string{"DEFAULT", "eng", "sales"}) {
		t.Fatalf("options %v", got)
	}
	if len(m.Inputs) != 3 || m.Inputs[1].Name != "username" || m.Inputs[2].Name != "password" {
		t.Fatalf("inputs %+v", m.Inputs)
	}
	o := &LoginForm{ID: "otp", Message: "Please enter your one-time password.", Secondary: "OTP:"}
	m, err = ParseServerMessage(o.Render())
	if err != nil {
		t.Fatal(err)
	}
	if m.AuthID != "otp" || len(m.Inputs) != 1 || m.Inputs[0].Name != SecondaryPasswordField || m.Inputs[0].Type != "password" {
		t.Fatalf("otp form: %+v", m)
	}
	// The client's answer carries the group as <group-select>.
	reply, err := ParseClientMessage("", AuthReply([]FormInput{{Name: "group_list", Value: "eng"}, {Name: "username", Value: "u"}}, nil))
	if err != nil || reply.GroupSelect != "eng" || reply.Username != "u" {
		t.Fatalf("reply %+v %v", reply, err)
	}
}

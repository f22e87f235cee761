package cstp

// GroupOption is one entry of a login form's group list (<select
// name="group_list">): Name is what the client sends back (openconnect's
// --authgroup matches it), Label what a user is shown.
type GroupOption struct{ Name, Label string }

// SecondaryPasswordField is the input name of a second-factor code.
// openconnect fills an input of this name from its software token
// (--token-mode=totp|hotp) without prompting (auth.c
// cstp_can_gen_tokencode), and ocserv uses it for its second password.
const SecondaryPasswordField = "secondary_password"

// LoginForm is a server's login form with the parts AuthForm lacks: a
// group list and a second-factor input.
type LoginForm struct {
	ID             string // <auth id>; "" means "main"
	Message, Error string
	// Username and Password ask for the username and the password.
	Username, Password bool
	// Secondary, if not empty, adds a password input named
	// SecondaryPasswordField with this label (a one-time password).
	Secondary string
	// Groups, if not empty, is offered as <select name="group_list">
	// before the inputs, with Selected (if one of them) marked.
	Groups   []GroupOption
	Selected string
}

// Render renders the form as AuthForm does.
func (f *LoginForm) Render() []byte {
	id := f.ID
	if id == "" {
		id = "main"
	}
	b := appendFormHead(id, f.Message, f.Error)
	if len(f.Groups) > 0 {
		b = append(b, `<select name="group_list" label="GROUP:">`+"\n"...)
		for _, g := range f.Groups {
			b = append(b, `<option value="`...)
			b = appendAttr(b, g.Name)
			b = append(b, '"')
			if g.Name == f.Selected {
				b = append(b, ` selected="true"`...)
			}
			b = append(b, '>')
			label := g.Label
			if label == "" {
				label = g.Name
			}
			b = appendText(b, label)
			b = append(b, "</option>\n"...)
		}
		b = append(b, "</select>\n"...)
	}
	if f.Username {
		b = append(b, `<input type="text" name="username" label="Username:" />`+"\n"...)
	}
	if f.Password {
		b = append(b, `<input type="password" name="password" label="Password:" />`+"\n"...)
	}
	if f.Secondary != "" {
		b = append(b, `<input type="password" name="`+SecondaryPasswordField+`" label="`...)
		b = appendAttr(b, f.Secondary)
		b = append(b, "\" />\n"...)
	}
	b = append(b, "</form>\n</auth>\n</config-auth>\n"...)
	return b
}

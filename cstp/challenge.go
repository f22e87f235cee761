package cstp

// ChallengeForm renders a second login form asking for one answer, as
// ocserv sends for a RADIUS Access-Challenge (an OTP step): message is the
// server's prompt (the Reply-Message), shown by openconnect before it
// prompts for the one password input, name, labelled label. The answer
// comes back as <auth><NAME>...</NAME></auth>.
func ChallengeForm(message, errMsg, name, label string) []byte {
	b := make([]byte, 0, 512)
	b = append(b, xmlDecl...)
	b = append(b, `<config-auth client="vpn" type="auth-request" aggregate-auth-version="2">`+"\n"...)
	b = append(b, `<auth id="main">`+"\n"...)
	b = append(b, "<title>Login</title>\n"...)
	if message != "" {
		b = appendMsgElem(b, "message", "", message)
	}
	if errMsg != "" {
		b = appendMsgElem(b, "error", ` id="88"`, errMsg)
	}
	b = append(b, `<form method="post" action="/auth">`+"\n"...)
	b = append(b, `<input type="password" name="`...)
	b = appendAttr(b, name)
	b = append(b, `" label="`...)
	b = appendAttr(b, label)
	b = append(b, `" />`+"\n"...)
	b = append(b, "</form>\n</auth>\n</config-auth>\n"...)
	return b
}

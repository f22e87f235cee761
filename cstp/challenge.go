package cstp

// ChallengeForm renders a second login form asking for one answer, as
// ocserv sends for a RADIUS Access-Challenge (an OTP step): message is the
// server's prompt (the Reply-Message), shown by openconnect before it
// prompts for the one password input, name, labelled label. The answer
// comes back as <auth><NAME>...</NAME></auth>.
func ChallengeForm(message, errMsg, name, label string) []byte {
	b := appendFormHead("main", message, errMsg)
	b = append(b, `<input type="password" name="`...)
	b = appendAttr(b, name)
	b = append(b, `" label="`...)
	b = appendAttr(b, label)
	b = append(b, `" />`+"\n"...)
	b = append(b, "</form>\n</auth>\n</config-auth>\n"...)
	return b
}

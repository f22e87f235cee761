package server

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"unicode"

	"kvpn/certs"
	"kvpn/cstp"
)

// Groups, as ocserv has them (docs/authentication.md):
//
//   - a user's groups come from the password file's group field
//     ("user:group1,group2:hash", the first being the default), from the
//     client certificate's cert-group-oid attribute, and from any other
//     authenticator that vouches for them (loginGroup's authGroups);
//   - select-group lists the groups the login form offers
//     (<select name="group_list">; openconnect --authgroup, vpnc
//     --authgroup pick one), default-select-group names an entry meaning
//     "my default group";
//   - a session's group is the one chosen, if the user is a member (else
//     the login is refused), or the user's default group;
//   - a [groups.NAME] table's settings apply to the group's sessions
//     between the global settings and the user's [users.NAME] table.

// GroupConfig is one [groups.NAME] table: settings for the sessions of a
// group, as ocserv's config-per-group files. Unset keys keep the global
// value; route and no-route are replaced together (setting either one
// gives the group its own split: the other one empty).
type GroupConfig struct {
	Route   []string `toml:"route"`
	NoRoute []string `toml:"no-route"`
	DNS     []string `toml:"dns"`
	// RestrictUserToRoutes overrides the global restrict-user-to-routes.
	RestrictUserToRoutes *bool `toml:"restrict-user-to-routes"`
	// IsolateClients overrides the global isolate-clients for the group's
	// users; a user's own setting overrides it (isolate.go).
	IsolateClients *bool `toml:"isolate-clients"`
}

// groupPolicy is a group's settings: for users without a [users.NAME]
// table, and for each user with one (that table over the group's).
type groupPolicy struct {
	def   *userPolicy
	users map[string]*userPolicy
}

// userIn returns the settings of user logged in to group ("" for none).
func (p *policy) userIn(user, group string) *userPolicy {
	if g := p.groups[group]; g != nil && group != "" {
		if u, ok := g.users[user]; ok {
			return u
		}
		return g.def
	}
	return p.user(user)
}

// maxGroupName bounds a group name (it travels in every cookie).
const maxGroupName = 64

// checkGroupName reports what is wrong with a group name, "" if nothing.
func checkGroupName(name string) string {
	switch {
	case name == "":
		return "empty group name"
	case len(name) > maxGroupName:
		return fmt.Sprintf("group name %q longer than %d bytes", name, maxGroupName)
	case strings.ContainsFunc(name, unicode.IsControl), strings.ContainsAny(name, "[]"):
		return fmt.Sprintf("group name %q contains a control character or a bracket", name)
	}
	return ""
}

// parseSelectGroup parses select-group entries: "NAME" or, as ocserv,
// "NAME[Label shown to users]".
func parseSelectGroup(list []string, bad func(key, format string, a ...any)) []cstp.GroupOption {
	var out []cstp.GroupOption
	for _, e := range list {
		name, label := strings.TrimSpace(e), ""
		if i := strings.IndexByte(name, '['); i >= 0 && strings.HasSuffix(name, "]") {
			name, label = strings.TrimSpace(name[:i]), strings.TrimSpace(name[i+1:len(name)-1])
		}
		if msg := checkGroupName(name); msg != "" {
			bad("select-group", "%s", msg)
			continue
		}
		if slices.ContainsFunc(out, func(o cstp.GroupOption) bool { return o.Name == name }) {
			bad("select-group", "group %q listed twice", name)
			continue
		}
		out = append(out, cstp.GroupOption{Name: name, Label: label})
	}
	return out
}

// validateGroups checks select-group, default-select-group and
// cert-group-oid; the [groups.NAME] tables are checked with the policy.
func (c *Config) validateGroups(bad func(key, format string, a ...any)) {
	c.selectGroups = parseSelectGroup(c.SelectGroup, bad)
	if d := c.DefaultSelectGroup; d != "" {
		if msg := checkGroupName(d); msg != "" {
			bad("default-select-group", "%s", msg)
		}
		if len(c.selectGroups) == 0 {
			bad("default-select-group", "needs select-group: it is an entry of the group list")
		}
		if slices.ContainsFunc(c.selectGroups, func(o cstp.GroupOption) bool { return o.Name == d }) {
			bad("default-select-group", "%q is also in select-group", d)
		}
	}
	if c.CertGroupOID != "" {
		if err := certs.CheckUserOID(c.CertGroupOID); err != nil {
			bad("cert-group-oid", "%v", err)
		}
		if !c.certAuth() {
			bad("cert-group-oid", "is used only with auth = %q", AuthCertificate)
		}
	}
}

// buildGroupPolicies parses the [groups.NAME] tables into pol, after the
// users (pol.users) are built: a user's table is applied over each group's.
func (c *Config) buildGroupPolicies(pol *policy, bad func(key, format string, a ...any)) {
	pol.groups = map[string]*groupPolicy{}
	names := make([]string, 0, len(c.Groups))
	for name := range c.Groups {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		gc := c.Groups[name]
		if gc == nil {
			gc = &GroupConfig{}
		}
		prefix := "groups." + tomlKey(name) + "."
		gbad := func(key, format string, a ...any) { bad(prefix+key, format, a...) }
		if msg := checkGroupName(name); msg != "" {
			bad("groups", "%s", msg)
			continue
		}
		routes, excludes := c.routes, c.noRoutes
		if gc.Route != nil || gc.NoRoute != nil {
			plan := validateRoutes(gc.Route, gc.NoRoute, c.pool, c.listenAddrs(), gbad)
			routes, excludes = plan.include, plan.exclude
		}
		var gdns []netip.Addr // nil: the global dns
		for _, d := range gc.DNS {
			a, err := netip.ParseAddr(d)
			if err != nil {
				gbad("dns", "%v", err)
				continue
			}
			gdns = append(gdns, a)
		}
		dns := c.dns
		if gdns != nil {
			dns = gdns
		}
		restrict := c.RestrictUserToRoutes
		if gc.RestrictUserToRoutes != nil {
			restrict = *gc.RestrictUserToRoutes
		}
		g := &groupPolicy{
			def: &userPolicy{routes: routes, excludes: excludes, dns: gdns, allow: c.allowList(routes, dns, restrict),
				iso: c.isolation(gc, nil)},
			users: map[string]*userPolicy{},
		}
		// Users with a table: theirs over the group's. A fixed address
		// and iroutes are the user's whatever the group; a route list of
		// their own replaces the group's as it replaces the global one.
		unames := make([]string, 0, len(pol.users))
		for uname := range pol.users {
			unames = append(unames, uname)
		}
		sort.Strings(unames)
		for _, uname := range unames {
			v := *pol.users[uname]
			v.excludes, v.dns = excludes, gdns
			if uc := c.Users[uname]; uc == nil || len(uc.Route) == 0 {
				v.routes = inheritRoutes(routes, v.iroutes)
				if len(routes) > 0 && len(v.routes) == 0 {
					bad(fmt.Sprintf("users.%s.iroute", tomlKey(uname)), "every route of group %q lies inside the user's iroutes, so the client would get a full tunnel in that group: give the user a route list of its own", name)
				}
			}
			v.allow = c.allowList(v.routes, dns, restrict)
			v.iso = c.isolation(gc, c.Users[uname])
			g.users[uname] = &v
		}
		pol.groups[name] = g
	}
}

// groupOptions are the login form's group list ("" none): default-select-
// group first, then select-group.
func (set *Settings) groupOptions() []cstp.GroupOption {
	if len(set.Groups) == 0 {
		return nil
	}
	if set.DefaultGroup == "" {
		return set.Groups
	}
	return append([]cstp.GroupOption{{Name: set.DefaultGroup}}, set.Groups...)
}

// passwordForm is the login form asking for the password (and the
// username, unless a certificate names the user), with the group list
// when select-group is set; chosen is marked selected if offered (the
// group-select of openconnect --authgroup's first request).
func (s *Server) passwordForm(message, errMsg string, username bool, chosen string) []byte {
	set := s.currentSettings()
	if set == nil || len(set.Groups) == 0 {
		return cstp.AuthForm(message, errMsg, username, true)
	}
	f := &cstp.LoginForm{Message: message, Error: errMsg, Username: username, Password: true, Groups: set.groupOptions()}
	for _, o := range f.Groups {
		if o.Name == chosen {
			f.Selected = chosen
		}
	}
	return f.Render()
}

// userGroups are the groups user is a member of by the password file and
// the client certificate, default first.
func (s *Server) userGroups(set *Settings, user string, leaf *x509.Certificate) []string {
	var groups []string
	if set != nil && set.Passwd != nil && s.cfg.passwordAuth() {
		groups = set.Passwd.Groups(user)
	}
	if leaf != nil && s.cfg.CertGroupOID != "" {
		if g, err := certs.UserOf(leaf, s.cfg.CertGroupOID); err == nil && g != "" && !slices.Contains(groups, g) {
			groups = append([]string{g}, groups...) // the certificate's first, as ocserv's cert group
		}
	}
	return groups
}

// loginGroup picks a login's group from the client's choice (group-select;
// default-select-group or none: the default group) and authGroups, the
// groups authentication vouched for, default first (userGroups; another
// authenticator such as RADIUS passes its own). Choosing a group the user
// is not a member of is an error.
func loginGroup(set *Settings, chosen string, authGroups []string) (string, error) {
	if set != nil && chosen != "" && chosen == set.DefaultGroup {
		chosen = ""
	}
	if chosen == "" {
		if len(authGroups) > 0 {
			return authGroups[0], nil
		}
		return "", nil
	}
	if slices.Contains(authGroups, chosen) {
		return chosen, nil
	}
	return "", fmt.Errorf("not a member of group %q", chosen)
}

// pushedDNS are the DNS servers for a session with settings u: its
// group's, else the global ones.
func pushedDNS(u *userPolicy, global []netip.Addr) []netip.Addr {
	if u != nil && u.dns != nil {
		return u.dns
	}
	return global
}

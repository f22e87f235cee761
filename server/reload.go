package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	"kvpn/auth"
	"kvpn/auth/otp"
	"kvpn/certs"
	"kvpn/cstp"
)

// Reload (SIGHUP, `vpnd ctl reload`) changes what new connections get
// without dropping a session. Each part it changes is an immutable value
// built from a validated Config and swapped in with one atomic store:
//
//   - Settings (here): the password file, the DNS servers and the search
//     domain pushed to clients;
//   - the users table and routes (policy.go, applied by applyPolicy).
//
// A connection reads each once while it is set up, so it never sees half a
// reload, and a reload that fails before the swap leaves everything as it
// was. Sessions keep what they were given until they reconnect, as with
// ocserv.
//
// To make another key reloadable: add its parsed form to Settings (or to
// the policy), fill it in BuildSettings, read it through currentSettings()
// where connections are set up, and list the key in reloadableKeys.

// Settings are the login and push settings a reload may change.
type Settings struct {
	Passwd        *auth.PasswdFile
	DNS           []netip.Addr
	DefaultDomain string
	// With auth = "certificate": the CAs of ca-cert (CAPool is what the
	// TLS handshake verifies against; a reload re-reads them only to
	// check the CRL's signature) and the CRL in force, nil without one.
	CAPool *x509.CertPool
	CAs    []*x509.Certificate
	CRL    *certs.CRL

	// Second factor and groups (otp.go, groups.go): the otp-file's
	// tokens (nil without one), select-group and default-select-group.
	OTP          *otp.File
	Groups       []cstp.GroupOption
	DefaultGroup string
}

// BuildSettings makes the settings of a validated configuration; it reads
// the password file.
func BuildSettings(cfg *Config) (*Settings, error) {
	p, err := loadPasswd(cfg)
	if err != nil {
		return nil, err
	}
	set := &Settings{
		Passwd:        p,
		DNS:           slices.Clone(cfg.dns),
		DefaultDomain: cfg.DefaultDomain,
		Groups:        cfg.selectGroups,
		DefaultGroup:  cfg.DefaultSelectGroup,
	}
	if cfg.OTPFile != "" {
		if set.OTP, err = otp.Load(cfg.OTPFile); err != nil {
			return nil, fmt.Errorf("otp-file: %w", err)
		}
	}
	if cfg.certAuth() {
		if set.CAPool, set.CAs, err = certs.LoadCAPool(cfg.CACert); err != nil {
			return nil, fmt.Errorf("ca-cert: %w", err)
		}
		if cfg.CRL != "" {
			if set.CRL, err = certs.LoadCRL(cfg.CRL, set.CAs); err != nil {
				return nil, fmt.Errorf("crl: %w", err)
			}
		}
	}
	return set, nil
}

// loadPasswd reads the password file. With certificate-only logins it
// may be missing (no user has a password).
func loadPasswd(cfg *Config) (*auth.PasswdFile, error) {
	p, err := auth.LoadPasswd(cfg.PasswdFile)
	if err != nil {
		if !cfg.passwordAuth() && errors.Is(err, fs.ErrNotExist) {
			return &auth.PasswdFile{}, nil
		}
		return nil, fmt.Errorf("password file: %w", err)
	}
	return p, nil
}

// reloadableKeys are the configuration keys a reload applies. Any other
// key that changes needs a restart, and Reload says so.
var reloadableKeys = map[string]bool{
	"passwd-file":             true,
	"route":                   true,
	"no-route":                true,
	"dns":                     true,
	"default-domain":          true,
	"users":                   true,
	"restrict-user-to-routes": true,
	"crl":                     true,
	"otp-file":                true,
	"select-group":            true,
	"default-select-group":    true,
	"groups":                  true,
	"isolate-clients":         true, // policy swap (isolate.go)
}

// currentSettings are the settings new connections use.
func (s *Server) currentSettings() *Settings { return s.settings.Load() }

// ReloadResult says what a reload did.
type ReloadResult struct {
	Applied []string // reloadable keys whose value changed (the password file is always re-read)
	Restart []string // keys that changed but need a restart; their old values stay in force
	// Partial lists what could not be applied after the new configuration
	// was swapped in (a kernel route refused, a connected session that
	// keeps an address until it logs in again); see ApplyPolicy.
	Partial []error
}

// Reload applies cfg's reloadable settings for new connections. cfg is
// validated and the password file read first; on any error there nothing
// changes. Keys that need a restart are reported, not applied; a new
// ipv4-network is refused (sessions hold addresses of the running pool).
func (s *Server) Reload(cfg *Config) (ReloadResult, error) {
	var res ReloadResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	if cfg.pool != s.cfg.pool {
		return res, errPoolChange
	}
	if cfg.pool6 != s.cfg.pool6 {
		return res, errPool6Change
	}
	set, err := BuildSettings(cfg)
	if err != nil {
		return res, err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.active
	res.Applied, res.Restart = diffKeys(old, cfg)
	s.polMu.Lock()
	perr := s.applyPolicy(cfg.pol)
	s.polMu.Unlock()
	if perr != nil {
		res.Partial = unjoin(perr)
	}
	s.settings.Store(set)
	s.endChangedUsers(set.Passwd)
	s.endRevokedCerts(set.CRL)
	// Remember the new values of the applied keys only, so the next diff
	// still reports a restart-only key that differs from what runs.
	next := *old
	nv, ov := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(&next).Elem()
	for i := range nv.NumField() {
		if k := fieldKey(nv.Type().Field(i)); k != "" && reloadableKeys[k] {
			ov.Field(i).Set(nv.Field(i))
		}
	}
	s.active = &next
	return res, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// ReloadFromSource reloads from the configuration source vpnd was started
// with (SetConfigSource) and logs the outcome.
func (s *Server) ReloadFromSource() (ReloadResult, error) {
	if s.source == nil {
		return ReloadResult{}, errors.New("no configuration source to reload from")
	}
	cfg, err := s.source()
	if err == nil {
		var res ReloadResult
		res, err = s.Reload(cfg)
		if err == nil {
			s.log.Info("configuration reloaded; new connections use it", "changed", res.Applied)
			for _, k := range res.Restart {
				s.log.Warn("configuration key changed but needs a restart; keeping the running value", "key", k)
			}
			for _, e := range res.Partial {
				s.log.Warn("reload: not applied", "err", e)
			}
			return res, nil
		}
	}
	s.log.Error("reload failed; keeping the running configuration", "err", err)
	return ReloadResult{}, err
}

// SetConfigSource tells the server how to re-read its configuration.
func (s *Server) SetConfigSource(f func() (*Config, error)) { s.source = f }

// diffKeys lists the keys whose values differ between a and b, split into
// reloadable ones and ones that need a restart. It walks the struct's toml
// tags, so a key added to Config is covered without listing it here.
func diffKeys(a, b *Config) (applied, restart []string) {
	av, bv := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for i := range av.NumField() {
		k := fieldKey(av.Type().Field(i))
		if k == "" || reflect.DeepEqual(av.Field(i).Interface(), bv.Field(i).Interface()) {
			continue
		}
		if reloadableKeys[k] {
			applied = append(applied, k)
		} else {
			restart = append(restart, k)
		}
	}
	return applied, restart
}

// fieldKey is the configuration key of a Config field ("" for none).
func fieldKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	k, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if k == "-" {
		return ""
	}
	return k
}

// ReloadPasswd re-reads only the password file, keeping the other
// settings (for callers that change users and nothing else).
func (s *Server) ReloadPasswd() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg := s.active
	if cfg == nil {
		cfg = s.cfg
	}
	p, err := loadPasswd(cfg)
	if err != nil {
		return err
	}
	set := Settings{DNS: cfg.dns, DefaultDomain: cfg.DefaultDomain}
	if old := s.settings.Load(); old != nil {
		set = *old
	}
	set.Passwd = p
	s.settings.Store(&set)
	s.endChangedUsers(p)
	return nil
}

// endChangedUsers ends the sessions of users who were deleted or locked,
// or whose entry changed (a new password), in the password file just
// loaded: their generation no longer matches the one their session
// logged in with. Their cookies are refused by checkLimits on every node
// sharing the file; each node ends its own live sessions on its reload.
// Called after the new file is in force, so a session resumed meanwhile
// is checked against it either here or by checkLimits.
func (s *Server) endChangedUsers(p *auth.PasswdFile) {
	if !s.cfg.passwordAuth() {
		return // certificate-only: the password file is not consulted
	}
	var wg sync.WaitGroup
	for _, sess := range s.list() {
		gen, ok := p.Generation(sess.user)
		if ok && gen == sess.gen {
			continue
		}
		s.Counters.UserChanged.Add(1)
		s.log.Warn("ending session: user deleted, locked or changed in the password file",
			"user", sess.user, "session", sess.id, "in-file-and-active", ok)
		// In parallel: a TERMINATE to a client that stopped reading
		// waits up to its 2 s deadline, and a reload must not take that
		// once per session.
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.terminate("user changed in the password file")
		}()
	}
	wg.Wait()
}

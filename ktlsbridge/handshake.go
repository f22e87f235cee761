package ktlsbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"kvpn/record"
)

// The handshake (crypto/tls) and the hand-over of each direction to the
// kernel, or to the userspace engine when the kernel cannot take it.

// Mode says whether the kernel should run the record layer.
type Mode string

const (
	// ModeAuto uses kernel TLS in each direction where the kernel accepts
	// the cipher, and the userspace record layer elsewhere.
	ModeAuto Mode = "auto"
	// ModeOn requires kernel TLS in both directions; a connection the
	// kernel cannot take fails with a clear error.
	ModeOn Mode = "on"
	// ModeOff never uses kernel TLS (kernel crypto is outside Go's FIPS
	// boundary, for one).
	ModeOff Mode = "off"
)

// DisableEnv, set to 1, turns kernel TLS off whatever the configuration
// says: a kill switch in the manner of quic-go's.
const DisableEnv = "KVPN_DISABLE_KTLS"

// ParseMode parses auto, on or off.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeOn, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("ktls: unknown mode %q (want auto, on or off)", s)
}

// Engine names, as reported in record.Engine.
const (
	EngineKernel    = "kernel"
	EngineUserspace = record.EngineUserspace
)

// Server runs a TLS server handshake on raw with crypto/tls, then hands
// the record layer to the kernel or to the userspace engine (see Mode).
func Server(ctx context.Context, raw net.Conn, cfg *tls.Config, mode Mode) (*Conn, error) {
	return handshake(ctx, raw, cfg, true, mode)
}

// Client runs a TLS client handshake; see Server.
func Client(ctx context.Context, raw net.Conn, cfg *tls.Config, mode Mode) (*Conn, error) {
	return handshake(ctx, raw, cfg, false, mode)
}

func handshake(ctx context.Context, raw net.Conn, cfg *tls.Config, server bool, mode Mode) (*Conn, error) {
	off := errOff
	if os.Getenv(DisableEnv) == "1" {
		mode, off = ModeOff, errDisabled
	}
	capt := NewCapture(raw, server)
	var tc *tls.Conn
	if server {
		tc = tls.Server(capt.Conn(), capt.Config(cfg))
	} else {
		tc = tls.Client(capt.Conn(), capt.Config(cfg))
	}
	fail := func(err error) (*Conn, error) {
		raw.Close()
		return nil, err
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		if server && cfg != nil && cfg.ClientAuth != tls.NoClientCert {
			// A refused client certificate: under TLS 1.3 the client has
			// finished its handshake and may have sent its first request,
			// and closing now, with that request unread, would reset the
			// connection and lose the alert that says why.
			lingerClose(raw)
			return nil, err
		}
		return fail(err)
	}
	cs := tc.ConnectionState()
	secrets, err := capt.Finish(cs)
	if err != nil {
		return fail(err)
	}
	ck, sk, err := DeriveKeys(secrets)
	if err != nil {
		return fail(err)
	}
	txKeys, rxKeys := ck, sk
	if server {
		txKeys, rxKeys = sk, ck
	}
	if hook := testHookKeys.Load(); hook != nil {
		(*hook)(&txKeys, &rxKeys)
	}
	c := &Conn{raw: raw, cs: cs}
	if sc, ok := raw.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	// From here on crypto/tls is never used again: its Write would
	// encrypt a second time, and its sequence numbers are now ours.
	var kerr [2]error // TX, RX
	if mode == ModeOff {
		kerr = [2]error{off, off}
	} else {
		kerr = c.tryKernel(txKeys, rxKeys)
	}
	if mode == ModeOn && (kerr[0] != nil || kerr[1] != nil) {
		return fail(fmt.Errorf("%w (%s, %s): tx: %v; rx: %v", ErrKernelRequired,
			tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), kerr[0], kerr[1]))
	}
	if kerr[0] != nil {
		if c.tx, err = newUserTX(raw, txKeys); err != nil {
			return fail(err)
		}
	}
	if kerr[1] != nil {
		if c.rx, err = newUserRX(raw, rxKeys); err != nil {
			return fail(err)
		}
	}
	c.engine = record.Engine{TX: c.tx.name(), RX: c.rx.name()}
	c.KernelErrors = kerr
	return c, nil
}

// The reasons a connection stays in userspace without trying the kernel,
// named in Describe so a log says why even when the kernel has kTLS.
var (
	errOff      = errors.New("ktls=off")
	errDisabled = errors.New(DisableEnv + "=1")
)

// forcedOff reports whether err is one of the reasons above.
func forcedOff(err error) bool { return errors.Is(err, errOff) || errors.Is(err, errDisabled) }

// testHookKeys lets tests corrupt the derived keys (negative controls).
var testHookKeys atomic.Pointer[func(tx, rx *Keys)]

// ErrKernelRequired is returned in ModeOn when the kernel cannot take the
// connection in both directions.
var ErrKernelRequired = errors.New("ktls=on but the kernel cannot take this connection")

// Describe says which engine runs each direction and, for a direction left
// in userspace, why: the line logged once per session.
func (c *Conn) Describe() string {
	s := fmt.Sprintf("%s %s: tx=%s rx=%s", tls.VersionName(c.cs.Version), tls.CipherSuiteName(c.cs.CipherSuite), c.engine.TX, c.engine.RX)
	switch tx, rx := c.KernelErrors[0], c.KernelErrors[1]; {
	case forcedOff(tx):
		s += fmt.Sprintf(" (kernel TLS off: %v)", tx)
	case tx != nil:
		s += fmt.Sprintf(" (kernel TLS unavailable: %v)", tx)
	case rx != nil:
		s += fmt.Sprintf(" (kernel TLS RX unavailable: %v)", rx)
	}
	return s
}

// tryKernel attaches the TLS ULP and sets TLS_TX and TLS_RX, each on its
// own so one direction can stay in userspace.
func (c *Conn) tryKernel(tx, rx Keys) [2]error {
	tcp, ok := c.raw.(*net.TCPConn)
	if !ok {
		err := errors.New("not a TCP connection")
		return [2]error{err, err}
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return [2]error{err, err}
	}
	var res [2]error
	cerr := rc.Control(func(fd uintptr) {
		if err := enableULP(int(fd)); err != nil {
			res = [2]error{err, err}
			return
		}
		if err := setCrypto(int(fd), tlsTX, tx.KernelInfo()); err != nil {
			res[0] = err
		} else {
			c.tx = &kernelTXEngine{k: kernelTX{rc: rc}}
		}
		if err := setCrypto(int(fd), tlsRX, rx.KernelInfo()); err != nil {
			res[1] = err
		} else {
			c.rx = &kernelRXEngine{k: kernelRX{rc: rc}}
		}
	})
	if cerr != nil {
		return [2]error{cerr, cerr}
	}
	return res
}

package client

import "errors"

// Exit codes of vpnc, documented in README.md and docs/vpnc.md.
const (
	ExitOK          = 0
	ExitUsage       = 2 // bad flags or arguments
	ExitAuth        = 3 // authentication failed
	ExitUnreachable = 4 // server unreachable, or its certificate does not match
	ExitTunnelLost  = 5 // the tunnel was lost and could not be re-established
	ExitKernelTLS   = 6 // --ktls on, but the kernel cannot run this connection's record layer
)

// Error is an error with the exit code vpnc should end with.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		return err
	}
	return &Error{Code: code, Err: err}
}

// ExitCode maps an error returned by Run to vpnc's exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 1
}

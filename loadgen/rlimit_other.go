//go:build !linux

package loadgen

import "errors"

// RaiseFileLimit is only implemented on Linux.
func RaiseFileLimit(want uint64) (uint64, error) {
	return 0, errors.New("loadgen: raising RLIMIT_NOFILE is only implemented on Linux")
}

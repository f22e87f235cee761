package loadgen

import "golang.org/x/sys/unix"

// RaiseFileLimit lifts RLIMIT_NOFILE, soft and hard, to at least want
// (raising the hard limit needs CAP_SYS_RESOURCE; we run as root). Each
// session holds a TCP and a UDP socket. It returns the soft limit in force
// afterwards, and the error if it could not be raised to want.
func RaiseFileLimit(want uint64) (uint64, error) {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	n := l
	n.Cur = want
	if n.Max < want {
		n.Max = want
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &n); err != nil {
		// Without the privilege, the soft limit can still go up to the hard.
		n = l
		n.Cur = l.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &n)
		unix.Getrlimit(unix.RLIMIT_NOFILE, &l)
		return l.Cur, err
	}
	return want, nil
}

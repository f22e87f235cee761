// Package privdrop makes a process that started as root run as an
// unprivileged user, keeping only the capabilities it names, on every
// thread of the process.
//
// Credentials and capabilities are per thread on Linux, and a Go program
// has many threads. Since Go 1.16, syscall.Setuid, Setgid and Setgroups
// change every thread; prctl(PR_SET_KEEPCAPS) and capset(2) do not, so
// Drop runs them on every thread with syscall.AllThreadsSyscall. That
// function works only in binaries without cgo (it returns ENOTSUP when
// cgo is linked, as the net package does by default when a C compiler is
// present): Drop then fails with ErrCgo before it changes anything, and
// the process stays as it was, so the caller can refuse to start. Build
// with CGO_ENABLED=0.
package privdrop

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrCgo is returned by Drop in a binary that links cgo.
var ErrCgo = errors.New("this binary links cgo, so capabilities cannot be kept on all threads across the user change; build it with CGO_ENABLED=0")

// Capabilities used by vpnd.
const (
	CapNetBindService = unix.CAP_NET_BIND_SERVICE
	CapNetAdmin       = unix.CAP_NET_ADMIN
)

// Mask is the bit mask of capability numbers, as /proc/PID/status shows
// CapEff.
func Mask(caps ...uintptr) uint64 {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return m
}

// Supported reports whether Drop can work in this binary: nil, or ErrCgo.
// It changes nothing.
func Supported() error {
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_GET_KEEPCAPS, 0, 0); e == syscall.ENOTSUP {
		return ErrCgo
	}
	return nil
}

// Drop switches every thread of the process to uid and gid (real,
// effective and saved; supplementary groups: gid only) and leaves it the
// capabilities keep in its permitted and effective sets, nothing else
// (inheritable and ambient empty; the bounding set is narrowed to keep,
// so nothing the process executes can regain more). The caller must be
// root (euid 0). Afterwards Drop checks the result and returns an error if
// any thread still has uid 0 or another capability; the process should
// exit then.
func Drop(uid, gid int, keep ...uintptr) error {
	if uid == 0 || gid == 0 {
		return fmt.Errorf("refusing to \"drop\" to uid %d gid %d: that is root", uid, gid)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the process runs as uid %d, not root: it cannot change its user", os.Geteuid())
	}
	// Keep the permitted set across setuid on every thread. This is the
	// probe for cgo too: it changes nothing that matters if it fails.
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return ErrCgo
		}
		return fmt.Errorf("prctl(PR_SET_KEEPCAPS): %w", err)
	}
	want := Mask(keep...)
	// Narrow the bounding set while CAP_SETPCAP is still held.
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if want&(1<<c) != 0 {
			continue
		}
		if err := allThreads(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("prctl(PR_CAPBSET_DROP, %d): %w", c, err)
		}
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups(%d): %w", gid, err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setresgid(%d): %w", gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setresuid(%d): %w", uid, err)
	}
	// The user change cleared the effective set and kept the permitted
	// one (KEEPCAPS): now set both to keep, on every thread.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[0].Permitted, data[0].Effective = uint32(want), uint32(want)
	data[1].Permitted, data[1].Effective = uint32(want>>32), uint32(want>>32)
	err := allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_KEEPCAPS, 0): %w", err)
	}
	return Check(uid, gid, want)
}

// allThreads runs a system call on every thread of the process.
func allThreads(trap, a1, a2, a3 uintptr) error {
	if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != 0 {
		return e
	}
	return nil
}

// Status is what /proc/PID/task/TID/status says about a thread's
// credentials.
type Status struct {
	Uid, Gid               [4]int // real, effective, saved, filesystem
	CapEff, CapPrm         uint64
	CapInh, CapAmb, CapBnd uint64
}

// ReadStatus parses the credential lines of a /proc status file.
func ReadStatus(path string) (Status, error) {
	var st Status
	data, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	seen := 0
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			if len(f) != 4 {
				return st, fmt.Errorf("%s: malformed %s line %q", path, key, line)
			}
			dst := &st.Uid
			if key == "Gid" {
				dst = &st.Gid
			}
			for i := range f {
				if dst[i], err = strconv.Atoi(f[i]); err != nil {
					return st, fmt.Errorf("%s: malformed %s line %q", path, key, line)
				}
			}
			seen++
		case "CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd":
			if len(f) != 1 {
				return st, fmt.Errorf("%s: malformed %s line %q", path, key, line)
			}
			v, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				return st, fmt.Errorf("%s: malformed %s line %q", path, key, line)
			}
			switch key {
			case "CapEff":
				st.CapEff = v
			case "CapPrm":
				st.CapPrm = v
			case "CapInh":
				st.CapInh = v
			case "CapAmb":
				st.CapAmb = v
			case "CapBnd":
				st.CapBnd = v
			}
			seen++
		}
	}
	if seen < 6 { // CapAmb is missing before Linux 4.3
		return st, fmt.Errorf("%s: credential lines missing", path)
	}
	return st, nil
}

// CheckPID checks every thread of process pid: all uids uid, all gids
// gid, effective and permitted capabilities exactly caps, none
// inheritable or ambient, and the bounding set within caps.
func CheckPID(pid, uid, gid int, caps uint64) error {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, t := range tids {
		st, err := ReadStatus(dir + "/" + t.Name() + "/status")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return err
		}
		for i := range 4 {
			if st.Uid[i] != uid || st.Gid[i] != gid {
				return fmt.Errorf("thread %s: uids %v gids %v, want all %d and %d", t.Name(), st.Uid, st.Gid, uid, gid)
			}
		}
		if st.CapEff != caps || st.CapPrm != caps || st.CapInh != 0 || st.CapAmb != 0 || st.CapBnd&^caps != 0 {
			return fmt.Errorf("thread %s: capabilities eff %#x prm %#x inh %#x amb %#x bnd %#x, want eff=prm=%#x, no others",
				t.Name(), st.CapEff, st.CapPrm, st.CapInh, st.CapAmb, st.CapBnd, caps)
		}
	}
	return nil
}

// Check is CheckPID for this process.
func Check(uid, gid int, caps uint64) error {
	return CheckPID(os.Getpid(), uid, gid, caps)
}

package ctl

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"
)

// callAs makes a Call from a thread of its own running as uid, gid and
// groups (raw system calls change only that thread's credentials, which
// the kernel records at connect). The thread is never unlocked, so it
// ends with the goroutine and no other goroutine runs with them.
func callAs(t *testing.T, path string, uid, gid int, groups []uint32, req Request) (Reply, error) {
	t.Helper()
	type result struct {
		rep Reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: the thread exits with the goroutine
		var gp uintptr
		if len(groups) > 0 {
			gp = uintptr(unsafe.Pointer(&groups[0]))
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(groups)), gp, 0); e != 0 {
			done <- result{err: e}
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			done <- result{err: e}
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			done <- result{err: e}
			return
		}
		rep, err := Call(path, req)
		done <- result{rep, err}
	}()
	r := <-done
	return r.rep, r.err
}

// TestAccessOtherUserRefused: a user who is not root and not in
// ctl-group is refused by the socket's mode, and, with a mode widened by
// mistake, by the SO_PEERCRED check; a member of ctl-group (primary or
// supplementary) gets answers.
func TestAccessOtherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (to act as other users)")
	}
	const other, otherGID, ctlGID = 65534, 65534, 54321
	top := t.TempDir()
	// Others may pass through to the socket's directory.
	os.Chmod(filepath.Dir(top), 0o711)
	os.Chmod(top, 0o711)
	path := filepath.Join(top, "run", "vpnd.sock")
	var handled atomic.Int32
	l := startSocket(t, path, HandlerFunc(func(Request) Reply {
		handled.Add(1)
		return Reply{OK: true}
	}))
	req := Request{Command: CmdShowUsers}

	// Mode 0600, directory 0700: the kernel refuses the connect.
	if _, err := callAs(t, path, other, otherGID, nil, req); err == nil || !strings.Contains(err.Error(), "for root and the ctl-group only") {
		t.Fatalf("other user, socket 0600: %v, want permission denied", err)
	}
	// Socket and directory opened to everyone by mistake: SO_PEERCRED
	// refuses, and the handler never runs.
	os.Chmod(filepath.Dir(path), 0o755)
	os.Chmod(path, 0o666)
	rep, err := callAs(t, path, other, otherGID, nil, req)
	if err != nil || rep.OK || !strings.Contains(rep.Error, "permission denied: uid 65534") {
		t.Fatalf("other user, socket 0666: %+v %v, want a permission denied reply", rep, err)
	}
	if handled.Load() != 0 || l.Refused.Load() != 1 {
		t.Fatalf("handled %d refused %d, want 0 and 1", handled.Load(), l.Refused.Load())
	}
	// Root is served.
	if rep, err := Call(path, req); err != nil || !rep.OK {
		t.Fatalf("root: %+v %v", rep, err)
	}

	// ctl-group: socket root:group 0660; the directory (back to 0700)
	// becomes 0710 root:group.
	os.Chmod(filepath.Dir(path), 0o700)
	if err := l.SetGroup(ctlGID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{path, 0o660}, {filepath.Dir(path), 0o710}} {
		fi, err := os.Stat(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != p.mode || fi.Sys().(*syscall.Stat_t).Gid != ctlGID {
			t.Errorf("%s: mode %v gid %d, want %v gid %d", p.path, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, p.mode, ctlGID)
		}
	}
	if rep, err := callAs(t, path, other, otherGID, []uint32{ctlGID}, req); err != nil || !rep.OK {
		t.Fatalf("member of ctl-group (supplementary): %+v %v", rep, err)
	}
	if rep, err := callAs(t, path, other, ctlGID, nil, req); err != nil || !rep.OK {
		t.Fatalf("member of ctl-group (primary): %+v %v", rep, err)
	}
	if _, err := callAs(t, path, other, otherGID, []uint32{otherGID}, req); err == nil {
		t.Fatalf("non-member got through with ctl-group set")
	}
	// The peer check holds with ctl-group too.
	os.Chmod(path, 0o666)
	os.Chmod(filepath.Dir(path), 0o711)
	rep, err = callAs(t, path, other, otherGID, []uint32{otherGID}, req)
	if err != nil || rep.OK || !strings.Contains(rep.Error, "permission denied") {
		t.Fatalf("non-member, socket 0666: %+v %v", rep, err)
	}
	if handled.Load() != 3 || l.Refused.Load() != 2 {
		t.Fatalf("handled %d refused %d, want 3 and 2", handled.Load(), l.Refused.Load())
	}
}

func TestSetGroupRefusesUnreachableDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	path := filepath.Join(t.TempDir(), "run", "vpnd.sock")
	l := startSocket(t, path, HandlerFunc(func(Request) Reply { return Reply{OK: true} }))
	os.Chmod(filepath.Dir(path), 0o750) // not what Listen makes: left alone
	if err := l.SetGroup(54321); err == nil || !strings.Contains(err.Error(), "cannot enter") {
		t.Fatalf("SetGroup with a 0750 directory of another group: %v", err)
	}
}

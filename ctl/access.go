package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Who may use the control socket: root, the user that created it (vpnd's
// own user when it was not started as root), and members of one group
// (ctl-group). The socket file's mode lets only them connect (0600, or
// 0660 root:group with SetGroup); each accepted connection is checked
// again with SO_PEERCRED and SO_PEERGROUPS, so a socket file whose mode
// was widened by mistake still refuses everyone else.

// Peer is the credentials of a control socket client, as the kernel
// recorded them when it connected.
type Peer struct {
	PID      int32
	UID, GID uint32
	Groups   []uint32 // supplementary groups (SO_PEERGROUPS)
}

// peerCreds reads c's peer credentials.
func peerCreds(c *net.UnixConn) (Peer, error) {
	var p Peer
	rc, err := c.SyscallConn()
	if err != nil {
		return p, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if serr != nil {
			return
		}
		p.PID, p.UID, p.GID = cred.Pid, cred.Uid, cred.Gid
		p.Groups, serr = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	return p, err
}

// peerGroups is getsockopt(SO_PEERGROUPS): the peer's supplementary
// groups (Linux 4.13 and later).
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == 0:
			return buf[:n/4], nil
		case e == unix.ERANGE && int(n/4) > len(buf):
			buf = make([]uint32, n/4)
		case e == unix.ENOPROTOOPT:
			return nil, nil // an old kernel: the primary group only
		default:
			return nil, fmt.Errorf("getsockopt(SO_PEERGROUPS): %w", e)
		}
	}
}

// allowed reports whether p may use the socket.
func (l *Listener) allowed(p Peer) bool {
	if p.UID == 0 || p.UID == l.owner {
		return true
	}
	g := l.group.Load()
	return g >= 0 && (p.GID == uint32(g) || slices.Contains(p.Groups, uint32(g)))
}

// checkPeer refuses c's peer unless allowed, with a log line at most
// every 10 s; it returns the reply to send instead of serving the request.
func (l *Listener) checkPeer(c *net.UnixConn, log *slog.Logger) (Reply, bool) {
	p, err := peerCreds(c)
	if err == nil && l.allowed(p) {
		return Reply{}, true
	}
	n := l.Refused.Add(1)
	now := time.Now().UnixNano()
	if last := l.lastRefusedLog.Load(); now-last >= int64(10*time.Second) && l.lastRefusedLog.CompareAndSwap(last, now) {
		if err != nil {
			log.Warn("ctl: connection refused: reading its credentials", "err", err, "refused-total", n)
		} else {
			log.Warn("ctl: connection refused: not root and not in ctl-group", "uid", p.UID, "gid", p.GID,
				"pid", p.PID, "refused-total", n)
		}
	}
	return Errorf("permission denied: uid %d is neither root nor in the control socket's group (ctl-group)", p.UID), false
}

// refuse reads the request (unparsed, so that the client's write does not
// fail before it reads the reply), answers rep and closes c.
func refuse(c *net.UnixConn, rep Reply) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	var raw json.RawMessage
	json.NewDecoder(io.LimitReader(c, MaxRequest+1)).Decode(&raw)
	json.NewEncoder(c).Encode(rep)
}

// SetGroup lets members of group gid use the socket besides root: the
// socket file becomes root:gid (the listener's user:gid) mode 0660, and
// its directory, when only its owner may enter it (mode 0700, as Listen
// creates it), gets group gid and mode 0710 so that the group can reach
// the socket. Any other directory the group cannot enter is an error.
func (l *Listener) SetGroup(gid int) error {
	if gid < 0 {
		return fmt.Errorf("ctl-group: bad gid %d", gid)
	}
	if err := os.Chown(l.path, -1, gid); err != nil {
		return fmt.Errorf("ctl-group: %w", err)
	}
	if err := os.Chmod(l.path, 0o660); err != nil {
		return fmt.Errorf("ctl-group: %w", err)
	}
	dir := filepath.Dir(l.path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("ctl-group: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	mode := fi.Mode().Perm()
	switch {
	case mode&0o001 != 0, mode&0o010 != 0 && int(st.Gid) == gid:
		// The group can enter it already.
	case mode == 0o700 && st.Uid == uint32(os.Geteuid()):
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("ctl-group: %w", err)
		}
		if err := os.Chmod(dir, 0o710); err != nil {
			return fmt.Errorf("ctl-group: %w", err)
		}
	default:
		return fmt.Errorf("ctl-group: the group (gid %d) cannot enter %s (mode %04o, gid %d): make it searchable by the group",
			gid, dir, mode, st.Gid)
	}
	l.group.Store(int64(gid))
	return nil
}

// errAccess explains a refused connect(2).
func errAccess(err error) error {
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: the control socket is for root and the ctl-group only", err)
	}
	return err
}

// accessState is the Listener's part for access checks.
type accessState struct {
	owner          uint32       // the uid that created the socket
	group          atomic.Int64 // ctl-group's gid, -1 for none
	lastRefusedLog atomic.Int64
	// Refused counts connections refused by the credentials check.
	Refused atomic.Uint64
}

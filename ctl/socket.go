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
	"sync"
	"syscall"
	"time"
)

// DefaultSocket is where vpnd listens unless ctl-socket says otherwise.
const DefaultSocket = "/run/kvpn/vpnd.sock"

// ioTimeout bounds one request-reply exchange on either side, so a client
// that connects and says nothing cannot hold a server goroutine.
const ioTimeout = 10 * time.Second

// Handler answers a parsed request.
type Handler interface {
	HandleCtl(Request) Reply
}

// Listener is the control socket. Close removes the socket file.
type Listener struct {
	ln   *net.UnixListener
	path string
	wg   sync.WaitGroup // the exchanges under way
	// serving is held by Serve while it accepts: Close waits for it before
	// waiting for wg, so no wg.Add can race wg.Wait.
	serving     sync.Mutex
	accessState               // who may connect (access.go)
	done        chan struct{} // closed by Close: ends streams (stream.go)
}

// Listen creates the control socket at path with mode 0600 (its directory
// is created 0700 if missing). If a socket file is already there and a
// server answers on it, another vpnd is running and Listen refuses; a
// stale file left by a crash is replaced.
func Listen(path string) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("ctl-socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("ctl-socket %s exists and is not a socket; not touching it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("ctl-socket %s: another vpnd is running (it answers on the socket)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("ctl-socket %s: removing stale socket: %w", path, err)
		}
	}
	// The socket file gets its mode from the umask at bind time: make it
	// 0600 from the start rather than chmod after, so there is no window.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("ctl-socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	l := &Listener{ln: ln, path: path, done: make(chan struct{})}
	l.owner = uint32(os.Geteuid())
	l.group.Store(-1)
	return l, nil
}

// Path is the socket's file name.
func (l *Listener) Path() string { return l.path }

// Serve answers requests with h until Close. Each connection carries one
// request and one reply.
func (l *Listener) Serve(h Handler, log *slog.Logger) {
	l.serving.Lock()
	defer l.serving.Unlock()
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Warn("ctl: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if rep, ok := l.checkPeer(c, log); !ok {
				refuse(c, rep)
				return
			}
			serveConn(c, h, log, l.done)
		}()
	}
}

// Close stops accepting, waits for the exchanges under way, and removes
// the socket file.
func (l *Listener) Close() error {
	err := l.ln.Close()
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.serving.Lock() // Serve has returned (or never ran)
	l.serving.Unlock()
	l.wg.Wait()
	return err
}

func serveConn(c *net.UnixConn, h Handler, log *slog.Logger, done <-chan struct{}) {
	defer c.Close()
	defer func() {
		// A bug in one command must not take the daemon down.
		if r := recover(); r != nil {
			log.Error("ctl: panic while answering a request", "panic", r)
		}
	}()
	c.SetDeadline(time.Now().Add(ioTimeout))
	// Read one JSON value; the client need not half-close. The decoder
	// stops at the first syntax error, and the limit bounds what a client
	// can make the server buffer.
	lr := &io.LimitedReader{R: c, N: MaxRequest + 1}
	var raw json.RawMessage
	err := json.NewDecoder(lr).Decode(&raw)
	var rep Reply
	switch {
	case lr.N <= 0:
		log.Info("ctl: bad request", "err", "too large")
		rep = Errorf("request too large (more than %d bytes)", MaxRequest)
	case err != nil:
		log.Info("ctl: bad request", "err", err)
		rep = Errorf("malformed request: %v", err)
	default:
		req, perr := ParseRequest(raw)
		if perr != nil {
			log.Info("ctl: bad request", "err", perr)
			rep = Reply{Error: perr.Error()}
		} else if st, ok := h.(Streamer); ok && Streaming(req.Command) {
			log.Debug("ctl: stream", "command", req.Command)
			serveStream(c, st, req, done)
			return
		} else {
			log.Debug("ctl: request", "command", req.Command, "args", req.Args)
			rep = h.HandleCtl(req)
		}
	}
	json.NewEncoder(c).Encode(rep)
}

// Call sends one request to the socket at path and returns the reply.
func Call(path string, req Request) (Reply, error) {
	var rep Reply
	data, err := json.Marshal(req)
	if err != nil {
		return rep, err
	}
	raddr := &net.UnixAddr{Name: path, Net: "unix"}
	c, err := net.DialUnix("unix", nil, raddr)
	if err != nil {
		return rep, fmt.Errorf("connecting to vpnd's control socket: %w (is vpnd running, with this ctl-socket?)", errAccess(err))
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(data); err != nil {
		return rep, err
	}
	c.CloseWrite()
	if err := json.NewDecoder(io.LimitReader(c, 64<<20)).Decode(&rep); err != nil {
		return rep, fmt.Errorf("reading vpnd's reply: %w", err)
	}
	return rep, nil
}

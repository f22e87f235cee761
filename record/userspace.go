package record

import (
	"crypto/tls"
	"net"
	"sync"
)

// userspaceConn is the crypto/tls engine. crypto/tls writes every record
// with its own write(2); the cork underneath collects the records of one
// WriteRecords call so the whole batch leaves in a single system call while
// each frame still travels in a record of its own.
type userspaceConn struct {
	*tls.Conn
	cork *corkConn
	wmu  sync.Mutex // serialises writers so the cork holds one batch only
}

func (c *userspaceConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(p)
}

func (c *userspaceConn) WriteRecords(bufs [][]byte, offset int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.cork.corked = true
	var werr error
	for _, b := range bufs {
		if _, werr = c.Conn.Write(b[offset:]); werr != nil {
			break
		}
	}
	c.cork.corked = false
	if err := c.cork.flush(); werr == nil {
		werr = err
	}
	return werr
}

func (c *userspaceConn) Engine() Engine {
	return Engine{TX: EngineUserspace, RX: EngineUserspace}
}

// corkConn sits between crypto/tls and the socket. While corked, writes are
// collected in buf instead of being sent; flush sends them with one write.
// Only the writer holding userspaceConn.wmu touches corked and buf.
type corkConn struct {
	net.Conn
	corked bool
	buf    []byte
}

// maxCork bounds the cork buffer: past it the batch is flushed early, so a
// huge batch cannot grow memory without limit.
const maxCork = 1 << 20

func (c *corkConn) Write(p []byte) (int, error) {
	if !c.corked {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxCork {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *corkConn) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

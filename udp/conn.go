// Package udp is the UDP socket glue of the DTLS data path: batched reads
// and writes (recvmmsg of its own, sendmmsg through golang.org/x/net) and socket
// buffer sizing.
package udp

import (
	"errors"
	"net"
	"os"
	"strconv"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Message is one datagram of a batch (the same type for IPv4 and IPv6
// sockets in x/net).
type Message = ipv4.Message

// SendBuffer is the send buffer size kvpn asks for. The default (about
// 208 KiB) overflows under a fast sender: the notes measured pion-based
// servers losing packets there.
const SendBuffer = 4 << 20

// ReceiveBuffer is the receive buffer size kvpn asks for by default (the
// kernel doubles it for its bookkeeping, socket(7)). The receive buffer is
// where a tunnel's standing queue sits under load: a TCP flow inside the
// tunnel fills whatever the receiving end holds, and every packet behind
// it, a ping or a keystroke, waits that long. Measured over DTLS here
// (docs/performance.md, issue #16): with 4 MiB the ping under one TCP
// stream takes 6-7 ms; with 512 KiB 3.6-4.8 ms, but 10-19 % less
// throughput over four streams. The default keeps the throughput;
// KVPN_UDP_RCVBUF=524288 takes the lower latency.
const ReceiveBuffer = 4 << 20

// receiveBuffer is ReceiveBuffer, or KVPN_UDP_RCVBUF (bytes, at least
// 64 KiB) to compare or tune.
var receiveBuffer = envBytes("KVPN_UDP_RCVBUF", ReceiveBuffer)

// envBytes is the size in bytes the variable name holds, or def when it
// is unset or not a number of at least 64 KiB.
func envBytes(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 64<<10 {
		return v
	}
	return def
}

// batchRW is what kvpn uses of x/net's ipv4 and ipv6 PacketConns.
type batchRW interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Conn is a UDP socket read and written in batches.
type Conn struct {
	*net.UDPConn
	b batchRW

	w Writer // WriteBatch's; other writers bring their own (NewWriter)

	gro bool // UDP_GRO is on: reads may return coalesced datagrams

	r recvmmsg // the reader's state; only the reading goroutine
}

// New wraps c, enlarging its socket buffers (with SO_*BUFFORCE when root,
// so net.core.rmem_max does not cap them; KVPN_UDP_NO_BUFFORCE=1 skips that).
func New(c *net.UDPConn) *Conn {
	setBuffers(c)
	conn := &Conn{UDPConn: c}
	conn.w.c = conn
	// x/net marshals each address by its own family, so the socket's family
	// must match the peers': sockets come from Listen (udp4 for IPv4
	// addresses, including 0.0.0.0) or from a dial to one address.
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil {
		conn.b = ipv4.NewPacketConn(c)
	} else {
		conn.b = ipv6.NewPacketConn(c)
	}
	return conn
}

// Listen opens a UDP socket on addr ("host:port"): an IPv4 socket for an
// IPv4 host (0.0.0.0 included), else an IPv6 one. Go would otherwise make a
// dual-stack IPv6 socket for 0.0.0.0, on which batched writes to IPv4 peers
// fail.
func Listen(addr string) (*Conn, error) {
	network, ua, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, err
	}
	return New(c), nil
}

// resolve picks the socket family for addr (see Listen) and resolves it.
func resolve(addr string) (string, *net.UDPAddr, error) {
	network := "udp6"
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.To4() != nil) {
		network = "udp4"
	}
	ua, err := net.ResolveUDPAddr(network, addr)
	return network, ua, err
}

func setBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	force := os.Getenv("KVPN_UDP_NO_BUFFORCE") != "1"
	rc.Control(func(fd uintptr) {
		if !force || unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
		}
		if !force || unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, SendBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, SendBuffer)
		}
	})
}

// ReadBatch blocks until at least one datagram arrives and returns how many
// of msgs were filled (recvmmsg). It allocates nothing: each Message's Addr
// points into storage the next ReadBatch reuses. Not safe for concurrent
// use.
func (c *Conn) ReadBatch(msgs []Message) (int, error) {
	return c.r.read(c, msgs)
}

// Writer sends batches on a Conn. It keeps the vectors that coalescing
// builds, so one Writer serves one goroutine at a time; several Writers
// may send on one Conn at once (each session of a server has its own).
type Writer struct {
	c *Conn
	// gso is the reused vector of coalesced messages, and iov the reused
	// backing array of their buffer lists.
	gso  []Message
	iov  [][]byte
	oobs [][]byte
}

// NewWriter returns a Writer of its own for c.
func (c *Conn) NewWriter() *Writer { return &Writer{c: c} }

// WriteBatch sends msgs with the Conn's own Writer. Not safe for
// concurrent use: concurrent senders use NewWriter.
func (c *Conn) WriteBatch(msgs []Message) error { return c.w.WriteBatch(msgs) }

// WriteBatch sends every message, in as few system calls as the kernel
// allows: runs of datagrams of one size to one address go out as one
// UDP_SEGMENT (GSO) send each, and those sends leave in sendmmsg calls.
func (w *Writer) WriteBatch(msgs []Message) error {
	if len(msgs) > 1 && !gsoDisabled.Load() {
		err := w.writeGSO(msgs)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EMSGSIZE):
			// A segment larger than the path MTU: the kernel fragments
			// such datagrams only when sent one by one.
		case isGSOError(err):
			// The device cannot segment: send plainly from now on.
			gsoDisabled.Store(true)
		default:
			return err
		}
	}
	return w.c.writePlain(msgs)
}

// writeGSO coalesces runs of equal-size datagrams (the last of a run may
// be shorter) to the same address into single messages whose buffers the
// kernel cuts into segments.
func (w *Writer) writeGSO(msgs []Message) error {
	out := w.gso[:0]
	oi := 0
	nbuf := 0
	for i := range msgs {
		nbuf += len(msgs[i].Buffers)
	}
	if cap(w.iov) < nbuf {
		w.iov = make([][]byte, 0, nbuf)
	}
	iov := w.iov[:0] // never grows past nbuf: slices into it stay valid
	for i := 0; i < len(msgs); {
		size := msgLen(&msgs[i])
		j, total := i+1, size
		for j < len(msgs) && j-i < maxGSOSegments && msgs[j].Addr == msgs[i].Addr && total+msgLen(&msgs[j]) <= maxGSOBytes {
			l := msgLen(&msgs[j])
			if l > size {
				break
			}
			total += l
			j++
			if l < size {
				break // a shorter datagram ends the run
			}
		}
		m := Message{Addr: msgs[i].Addr}
		if j-i == 1 {
			m.Buffers = msgs[i].Buffers
		} else {
			start := len(iov)
			for k := i; k < j; k++ {
				iov = append(iov, msgs[k].Buffers...)
			}
			m.Buffers = iov[start:len(iov):len(iov)]
			if oi == len(w.oobs) {
				w.oobs = append(w.oobs, nil)
			}
			w.oobs[oi] = gsoCmsg(w.oobs[oi], size)
			m.OOB = w.oobs[oi]
			oi++
		}
		out = append(out, m)
		i = j
	}
	w.gso = out
	err := w.c.writePlain(out)
	clear(w.gso)
	clear(iov)
	return err
}

func msgLen(m *Message) int {
	n := 0
	for _, b := range m.Buffers {
		n += len(b)
	}
	return n
}

func (c *Conn) writePlain(msgs []Message) error {
	for len(msgs) > 0 {
		n, err := c.b.WriteBatch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

package dtls

import (
	"sync/atomic"

	"kvpn/udp"
)

// spillBuffers is how many datagrams split out of coalesced (UDP GRO)
// receives one read batch can hold before its packets must be sent on; a
// GSO send carries at most 64 segments, so this holds two full ones.
const spillBuffers = 128

// spill is the server's store for datagrams split out of coalesced
// receives. Each buffer is as large as a receive buffer, so the packet
// decrypted in it keeps room behind it for the TUN device's GRO.
type spill struct {
	bufs [][]byte
	dgs  [][]byte // dgs[i] = bufs[i][:datagram length], capacity kept
	used int
}

func newSpill() *spill {
	mem := make([]byte, spillBuffers*recvBufSize)
	sp := &spill{bufs: make([][]byte, spillBuffers), dgs: make([][]byte, spillBuffers)}
	for i := range sp.bufs {
		sp.bufs[i] = mem[i*recvBufSize : (i+1)*recvBufSize : (i+1)*recvBufSize]
	}
	return sp
}

// room reports whether n more datagrams fit.
func (sp *spill) room(n int) bool { return sp.used+n <= len(sp.bufs) }

// add copies dg into the next free buffer.
func (sp *spill) add(dg []byte) {
	sp.dgs[sp.used] = sp.bufs[sp.used][:copy(sp.bufs[sp.used], dg)]
	sp.used++
}

// reset frees every buffer (their packets have been written).
func (sp *spill) reset() {
	clear(sp.dgs[:sp.used])
	sp.used = 0
}

// groMessages is how many (possibly coalesced) datagrams the client reads
// per system call when UDP GRO is on; each may carry up to 64 datagrams.
const groMessages = 16

// groReader is the client's receive path when UDP GRO is on: it reads into
// buffers of its own, since a coalesced datagram is larger than the
// caller's, and copies datagram by datagram into the caller's buffers,
// keeping what does not fit for the next call.
type groReader struct {
	msgs []udp.Message
	n    int   // messages filled by the last read
	i    int   // the message being split
	off  int   // where its next datagram starts
	seg  int   // its segment size (the whole message when 0)
	segs []int // every message's segment size, read once per read
}

func newGROReader() *groReader {
	r := &groReader{msgs: make([]udp.Message, groMessages), segs: make([]int, groMessages)}
	mem := make([]byte, groMessages*recvBufSize)
	oob := make([]byte, groMessages*udp.OOBSize)
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{mem[i*recvBufSize : (i+1)*recvBufSize : (i+1)*recvBufSize]}
		r.msgs[i].OOB = oob[i*udp.OOBSize : (i+1)*udp.OOBSize]
	}
	return r
}

// fill copies datagrams into bufs[k][start:], setting out[k].N to each
// one's length, and returns how many it copied. It reads from conn (and
// blocks) only when nothing is left from the last read.
func (r *groReader) fill(conn *udp.Conn, out []udp.Message, bufs [][]byte, start int, coalesced *atomic.Uint64) (int, error) {
	if r.i >= r.n {
		n, err := conn.ReadBatch(r.msgs)
		if err != nil {
			return 0, err
		}
		r.n, r.i, r.off = n, 0, 0
		for i := range n {
			r.segs[i] = udp.SegmentSize(&r.msgs[i])
			if seg := r.segs[i]; seg > 0 {
				coalesced.Add(uint64((r.msgs[i].N + seg - 1) / seg))
			}
		}
		r.seg = r.segs[0]
	}
	k := 0
	for k < len(bufs) && r.i < r.n {
		m := &r.msgs[r.i]
		dg := m.Buffers[0][r.off:m.N]
		if r.seg > 0 && len(dg) > r.seg {
			dg = dg[:r.seg]
		}
		out[k].N = copy(bufs[k][start:], dg)
		k++
		r.off += len(dg)
		if r.off >= m.N {
			r.i++
			r.off = 0
			if r.i < r.n {
				r.seg = r.segs[r.i]
			}
		}
	}
	return k, nil
}

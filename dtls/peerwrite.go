package dtls

import (
	"sync"

	"kvpn/udp"
)

// peerWrite is what one Peer.WritePackets call needs: the message vector
// and a udp.Writer (whose GSO vectors grow with the batch). Kept per peer,
// both stayed as large as the largest burst the session ever sent (up to
// 1024 messages, about 100 KiB); pooled, a peer holds them only while it
// writes, and an idle session holds none.
type peerWrite struct {
	msgs []udp.Message
	conn *udp.Conn
	w    *udp.Writer
}

// peerWrites is shared by every listener: a writer belongs to its conn, so
// get makes a new one for another conn.
var peerWrites = sync.Pool{New: func() any { return new(peerWrite) }}

// getPeerWrite returns a peerWrite with n messages for conn.
func getPeerWrite(conn *udp.Conn, n int) *peerWrite {
	pw := peerWrites.Get().(*peerWrite)
	if pw.conn != conn {
		pw.conn, pw.w = conn, conn.NewWriter()
	}
	if len(pw.msgs) < n {
		pw.msgs = make([]udp.Message, n)
		for i := range pw.msgs {
			pw.msgs[i].Buffers = make([][]byte, 1)
		}
	}
	return pw
}

// putPeerWrite drops the references to the batch and pools pw.
func putPeerWrite(pw *peerWrite) {
	for i := range pw.msgs {
		pw.msgs[i].Buffers[0] = nil
		pw.msgs[i].Addr = nil
	}
	peerWrites.Put(pw)
}

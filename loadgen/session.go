package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kvpn/cstp"
	"kvpn/dtls"
)

const (
	// frameBufSize is the tunnel's read buffer: one frame of the MTU the
	// generator asks for. Bigger frames are skipped, not buffered.
	frameBufSize = 2048
	// dtlsHeadroom is the room left in front of a packet for the DTLS
	// record header (13 bytes, plus a connection ID and the explicit
	// nonce); dtlsBufSize holds a datagram of any MTU a server pushes on a
	// 1500-byte link.
	dtlsHeadroom    = 64
	dtlsBufSize     = frameBufSize
	dtlsTimeout     = 5 * time.Second
	writeTimeout    = 5 * time.Second
	disconnectGrace = 2 * time.Second
	// ctrlPayload bounds the DPD payload echoed back.
	ctrlPayload = 64
)

// sess is one session's tunnel.
type sess struct {
	r      *runner
	id     int
	tc     *tls.Conn
	fr     *bufio.Reader
	params *cstp.TunnelParams

	wmu  sync.Mutex // guards wbuf and writes on tc
	wbuf []byte

	lastRecv, lastSend atomic.Int64 // TLS, unix nanoseconds
	lastPing           int64        // TLS; the timer goroutine only
	dpd, keepalive     time.Duration

	dtls           atomic.Pointer[dtls.ClientChannel]
	dlastPing      int64 // the timer goroutine only
	ddpd, dkeepive time.Duration

	addr, target netip.Addr

	ending   atomic.Bool
	done     chan struct{}
	doneOnce sync.Once
	endErr   error
	wg       sync.WaitGroup
}

// setup logs in, sends CONNECT and tries DTLS. On error the session never
// came up.
func (r *runner) setup(ctx context.Context, id int) (*sess, error) {
	st := r.stats
	start := time.Now()
	tc, err := dialTLS(ctx, r.cfg, r.tlsCfg)
	if err != nil {
		return nil, err
	}
	x := &exchange{cfg: r.cfg, tc: tc, br: headReaders.Get().(*bufio.Reader), cookies: map[string]string{}}
	x.br.Reset(tc)
	fail := func(err error) (*sess, error) {
		if x.br != nil {
			x.br.Reset(nil)
			headReaders.Put(x.br)
		}
		tc.Close()
		return nil, err
	}
	cookie, err := x.login(r.cfg.user(id))
	if err != nil {
		return fail(err)
	}
	st.Logins.Add(1)
	st.Login.Add(time.Since(start))
	cstart := time.Now()
	p, err := x.connect(cookie)
	if err != nil {
		return fail(err)
	}
	st.Connect.Add(time.Since(cstart))
	tc.SetDeadline(time.Time{})
	s := &sess{r: r, id: id, tc: tc, params: p, done: make(chan struct{}), addr: p.Address}
	s.fr = bufio.NewReaderSize(x.release(), frameBufSize)
	s.wbuf = make([]byte, 0, cstp.HeaderLen+max(ctrlPayload, r.cfg.Size))
	s.dpd = time.Duration(p.DPD) * time.Second
	s.keepalive = time.Duration(p.Keepalive) * time.Second
	s.target = r.cfg.PingTarget
	if !s.target.IsValid() {
		s.target = serverTunnelAddr(p.Address, p.Netmask)
	}
	now := time.Now().UnixNano()
	s.lastRecv.Store(now)
	s.lastSend.Store(now)
	if dc, ok := r.dtlsConfig(tc, p); ok {
		dstart := time.Now()
		ch, err := dtls.Dial(ctx, dc)
		switch {
		case err == nil:
			st.DTLS.Add(time.Since(dstart))
			st.DTLSOK.Add(1)
			st.DTLSUp.Add(1)
			s.dtls.Store(ch)
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			st.fail(FailAddrNotAvail + "-udp")
		case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
			st.fail(FailFileLimit + "-udp")
		case ctx.Err() == nil:
			st.fail(FailDTLSHandshake)
			r.cfg.Log.Debug("DTLS handshake failed; staying on TLS", "session", id, "err", err)
		}
		s.ddpd = time.Duration(p.DTLSDPD) * time.Second
		if s.ddpd == 0 {
			s.ddpd = s.dpd
		}
		s.dkeepive = time.Duration(p.DTLSKeepalive) * time.Second
		if s.dkeepive == 0 {
			s.dkeepive = s.keepalive
		}
	}
	st.Connects.Add(1)
	return s, nil
}

// dtlsConfig is the DTLS offer of a CONNECT answer, as vpnc reads it
// (client/dtls.go).
func (r *runner) dtlsConfig(tc *tls.Conn, p *cstp.TunnelParams) (dtls.ClientConfig, bool) {
	if r.cfg.NoDTLS {
		return dtls.ClientConfig{}, false
	}
	if p.DTLSPort == 0 || len(p.DTLSAppID) != dtls.AppIDLen || p.DTLSCipherSuite != "PSK-NEGOTIATE" {
		r.stats.DTLSNotOffered.Add(1)
		return dtls.ClientConfig{}, false
	}
	psk, err := dtls.PSK(tc.ConnectionState())
	if err != nil {
		r.stats.fail(FailDTLSHandshake)
		r.cfg.Log.Warn("no DTLS: cannot derive its key", "err", err)
		return dtls.ClientConfig{}, false
	}
	ta, ok := tc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return dtls.ClientConfig{}, false
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	return dtls.ClientConfig{
		Server:  netip.AddrPortFrom(ip.Unmap(), uint16(p.DTLSPort)),
		AppID:   p.DTLSAppID,
		PSK:     psk,
		Timeout: dtlsTimeout,
		Local:   r.cfg.LocalAddr,
		NoGRO:   true,
	}, true
}

// end stops the session for err (nil: a clean end, ours) and unblocks its
// readers. Only the first call counts.
func (s *sess) end(err error) {
	s.doneOnce.Do(func() {
		s.endErr = err
		s.ending.Store(true)
		close(s.done)
	})
}

// start runs the session's readers and, with --pps, its sender.
func (s *sess) start() {
	s.wg.Add(1)
	go s.readTLS()
	if ch := s.dtls.Load(); ch != nil {
		s.wg.Add(1)
		go s.readDTLS(ch)
	}
	if s.r.cfg.PPS > 0 {
		s.wg.Add(1)
		go s.send()
	}
}

// stop tears the session down: DISCONNECT first when we end it (unless
// NoDisconnect), then both sockets are closed and the goroutines waited
// for.
func (s *sess) stop() {
	s.end(nil)
	if s.endErr == nil && !s.r.cfg.NoDisconnect {
		s.tc.SetWriteDeadline(time.Now().Add(disconnectGrace))
		if s.writeFrame(cstp.TypeDisconnect, cstp.DisconnectPayload("Client logout")) == nil {
			s.r.stats.Disconnects.Add(1)
		}
	}
	if ch := s.dtls.Swap(nil); ch != nil {
		ch.Close()
		s.r.stats.DTLSUp.Add(-1)
	}
	s.tc.Close()
	s.wg.Wait()
}

// writeFrame sends one CSTP frame on TLS.
func (s *sess) writeFrame(t cstp.FrameType, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.wbuf[:cstp.HeaderLen]
	cstp.PutHeader(b, t, len(payload))
	b = append(b, payload...)
	s.wbuf = b[:0]
	if !s.ending.Load() {
		s.tc.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	if _, err := s.tc.Write(b); err != nil {
		return err
	}
	s.lastSend.Store(time.Now().UnixNano())
	return nil
}

// readTLS reads CSTP frames until the connection ends.
func (s *sess) readTLS() {
	defer s.wg.Done()
	var payload [frameBufSize]byte
	for {
		t, n, err := s.nextFrame()
		if err != nil {
			s.endRead(err)
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		if n > len(payload) {
			if _, err := s.fr.Discard(n); err != nil {
				s.endRead(err)
				return
			}
			continue
		}
		if _, err := io.ReadFull(s.fr, payload[:n]); err != nil {
			s.endRead(err)
			return
		}
		switch t {
		case cstp.TypeData:
			s.received(payload[:n])
		case cstp.TypeDPDReq:
			if s.writeFrame(cstp.TypeDPDResp, payload[:min(n, ctrlPayload)]) == nil {
				s.r.stats.DPDAnswered.Add(1)
			}
		case cstp.TypeDisconnect, cstp.TypeTerminate:
			s.end(failure(FailServerClosed, errors.New(t.String()+": "+cstp.DisconnectReason(payload[:n]))))
			return
		}
	}
}

func (s *sess) nextFrame() (cstp.FrameType, int, error) {
	h, err := s.fr.Peek(cstp.HeaderLen)
	if err != nil {
		return 0, 0, err
	}
	t, n, err := cstp.ParseHeader(h)
	if err != nil {
		return 0, 0, failure(FailProtocol, err)
	}
	s.fr.Discard(cstp.HeaderLen)
	return t, n, nil
}

// endRead ends the session for a read error, unless it is ending anyway.
func (s *sess) endRead(err error) {
	if s.ending.Load() {
		return
	}
	var se *sessionError
	switch {
	case errors.As(err, &se):
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		err = failure(FailServerClosed, err)
	default:
		err = failure(FailReadError, err)
	}
	s.end(err)
}

// received accounts for one packet from the server.
func (s *sess) received(pkt []byte) {
	st := s.r.stats
	st.RxPackets.Add(1)
	st.RxBytes.Add(uint64(len(pkt)))
	if id, stamp, ok := parseEchoReply(pkt); ok && id == s.echoID() {
		st.EchoReplies.Add(1)
		st.RTT.Add(time.Duration(time.Now().UnixNano() - stamp))
	}
}

func (s *sess) echoID() uint16 { return uint16(s.id) }

// readDTLS reads the DTLS channel until it fails; the session then goes
// on over TLS.
func (s *sess) readDTLS(ch *dtls.ClientChannel) {
	defer s.wg.Done()
	bufs := [][]byte{make([]byte, dtlsBufSize)}
	var sizes [1]int
	for {
		n, err := ch.ReadPackets(bufs, sizes[:], dtlsHeadroom)
		for i := range n {
			s.received(bufs[i][dtlsHeadroom : dtlsHeadroom+sizes[i]])
		}
		if err != nil {
			if !s.ending.Load() {
				s.dropDTLS(ch, err)
			}
			return
		}
	}
}

// dropDTLS falls back to TLS.
func (s *sess) dropDTLS(ch *dtls.ClientChannel, err error) {
	if s.dtls.CompareAndSwap(ch, nil) {
		ch.Close()
		s.r.stats.DTLSUp.Add(-1)
		s.r.stats.fail(FailDTLSLost)
		s.r.cfg.Log.Debug("DTLS lost; traffic falls back to TLS", "session", s.id, "err", err)
	}
}

// send sends echo requests at cfg.PPS: over DTLS when it is up, else TLS.
func (s *sess) send() {
	defer s.wg.Done()
	cfg := s.r.cfg
	buf := make([]byte, dtlsHeadroom+cfg.Size+64)
	vec := [][]byte{buf[:dtlsHeadroom+cfg.Size]}
	pkt := buf[dtlsHeadroom : dtlsHeadroom+cfg.Size]
	t := time.NewTicker(time.Duration(float64(time.Second) / cfg.PPS))
	defer t.Stop()
	var seq uint16
	st := s.r.stats
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		seq++
		putEchoRequest(pkt, s.addr, s.target, s.echoID(), seq, time.Now().UnixNano())
		var err error
		if ch := s.dtls.Load(); ch != nil && ch.Headroom() <= dtlsHeadroom {
			vec[0] = buf[:dtlsHeadroom+cfg.Size]
			if err = ch.WritePackets(vec, dtlsHeadroom); err != nil {
				s.dropDTLS(ch, err)
				continue
			}
		} else if err = s.writeFrame(cstp.TypeData, pkt); err != nil {
			continue // the reader sees the broken connection
		}
		st.TxPackets.Add(1)
		st.TxBytes.Add(uint64(cfg.Size))
	}
}

// tick runs the session's timers (called by the runner's timer goroutine):
// openconnect's rules (session.KeepAlive) on each channel: a DPD request
// after DPD of silence, repeated every DPD/2, the peer dead after 2 x DPD;
// a keepalive after Keepalive without sending.
func (s *sess) tick(now time.Time) {
	if s.ending.Load() {
		return
	}
	n := now.UnixNano()
	if s.dpd > 0 {
		idle := time.Duration(n - s.lastRecv.Load())
		if idle >= 2*s.dpd {
			s.end(failure(FailDPDTimeout, errors.New("no answer to DPD on TLS")))
			return
		}
		if idle >= s.dpd && time.Duration(n-s.lastPing) >= s.dpd/2 {
			s.lastPing = n
			s.writeFrame(cstp.TypeDPDReq, nil)
		}
	}
	if s.keepalive > 0 && time.Duration(n-s.lastSend.Load()) >= s.keepalive {
		s.writeFrame(cstp.TypeKeepalive, nil)
	}
	ch := s.dtls.Load()
	if ch == nil {
		return
	}
	if s.ddpd > 0 {
		idle := now.Sub(ch.LastReceive())
		if idle >= 2*s.ddpd {
			s.dropDTLS(ch, errors.New("no answer to DPD on DTLS"))
			return
		}
		if idle >= s.ddpd && time.Duration(n-s.dlastPing) >= s.ddpd/2 {
			s.dlastPing = n
			ch.Ping()
		}
	}
	if s.dkeepive > 0 && now.Sub(ch.LastSend()) >= s.dkeepive {
		ch.Keepalive()
	}
}

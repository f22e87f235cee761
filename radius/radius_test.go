package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
)

var testSecret = []byte("s3cret")

// testServer is an in-process RADIUS server (layeh's PacketServer).
type testServer struct {
	addr string
	mu   sync.Mutex
	reqs []*layeh.Packet
	// msgAuthOK counts Access-Requests whose Message-Authenticator checked.
	msgAuthOK atomic.Int64
}

func startServer(t *testing.T, h func(w layeh.ResponseWriter, r *layeh.Request)) *testServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: pc.LocalAddr().String()}
	srv := &layeh.PacketServer{
		SecretSource: layeh.StaticSecretSource(testSecret),
		Handler: layeh.HandlerFunc(func(w layeh.ResponseWriter, r *layeh.Request) {
			ts.mu.Lock()
			ts.reqs = append(ts.reqs, r.Packet)
			ts.mu.Unlock()
			if r.Code == layeh.CodeAccessRequest && requestMsgAuthOK(r.Packet) {
				ts.msgAuthOK.Add(1)
			}
			h(w, r)
		}),
	}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ts
}

func (ts *testServer) requests() []*layeh.Packet {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]*layeh.Packet(nil), ts.reqs...)
}

// requestMsgAuthOK checks an Access-Request's Message-Authenticator.
func requestMsgAuthOK(p *layeh.Packet) bool {
	b, err := p.MarshalBinary()
	if err != nil {
		return false
	}
	off := findAttr(b, msgAuthType)
	if off < 0 {
		return false
	}
	got := append([]byte(nil), b[off:off+16]...)
	clear(b[off : off+16])
	m := hmac.New(md5.New, p.Secret)
	m.Write(b)
	return hmac.Equal(m.Sum(nil), got)
}

func testClient(t *testing.T, servers ...string) *Client {
	t.Helper()
	dir := t.TempDir()
	sf := filepath.Join(dir, "secret")
	os.WriteFile(sf, append(testSecret, '\n'), 0o600)
	var errs []string
	cfg := (&Config{Server: servers, SecretFile: sf, NASIdentifier: "test-nas", Timeout: 1, Retries: 1,
		InterimInterval: 1, AcctServer: servers}).Parse("", func(k, f string, a ...any) { errs = append(errs, k) })
	if cfg == nil {
		t.Fatal(errs)
	}
	cfg.Timeout = 200 * time.Millisecond
	return NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func accept(attrs func(p *layeh.Packet)) func(layeh.ResponseWriter, *layeh.Request) {
	return func(w layeh.ResponseWriter, r *layeh.Request) {
		if r.Code == layeh.CodeAccountingRequest {
			w.Write(r.Response(layeh.CodeAccountingResponse))
			return
		}
		if rfc2865.UserPassword_GetString(r.Packet) != "pw" {
			w.Write(r.Response(layeh.CodeAccessReject))
			return
		}
		p := r.Response(layeh.CodeAccessAccept)
		if attrs != nil {
			attrs(p)
		}
		w.Write(p)
	}
}

func TestAuthenticateAccept(t *testing.T) {
	ts := startServer(t, accept(func(p *layeh.Packet) {
		rfc2865.FramedIPAddress_Set(p, net.IPv4(10, 77, 0, 50))
		rfc2865.FramedRoute_AddString(p, "192.168.50.0/24 0.0.0.0 1")
		rfc2865.Class_Add(p, []byte("OU=engineering;"))
		rfc2865.SessionTimeout_Set(p, 3600)
		rfc2865.IdleTimeout_Set(p, 600)
		rfc2865.FilterID_SetString(p, "ignored")
	}))
	c := testClient(t, ts.addr)
	res, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw", CallingStationID: "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Accept {
		t.Fatalf("outcome %v", res.Outcome)
	}
	s := res.Settings
	if s.FramedIP != netip.MustParseAddr("10.77.0.50") || len(s.Routes) != 1 || s.Routes[0] != netip.MustParsePrefix("192.168.50.0/24") ||
		s.Group() != "engineering" || s.SessionTimeout != time.Hour || s.IdleTimeout != 10*time.Minute || len(s.Class) != 1 {
		t.Fatalf("settings %+v", s)
	}
	if len(s.Ignored) != 1 || s.Ignored[0] != "Filter-Id" {
		t.Fatalf("ignored %v", s.Ignored)
	}
	req := ts.requests()[0]
	if ts.msgAuthOK.Load() != 1 {
		t.Fatal("Access-Request without a valid Message-Authenticator")
	}
	if rfc2865.NASIdentifier_GetString(req) != "test-nas" || rfc2865.CallingStationID_GetString(req) != "192.0.2.7" ||
		rfc2865.UserName_GetString(req) != "alice" {
		t.Fatalf("request attributes %v", req.Attributes)
	}
	res, err = c.Authenticate(context.Background(), Request{User: "alice", Password: "wrong"})
	if err != nil || res.Outcome != Reject {
		t.Fatalf("wrong password: %v %v", res, err)
	}
}

func TestAuthenticateChallenge(t *testing.T) {
	ts := startServer(t, func(w layeh.ResponseWriter, r *layeh.Request) {
		st := rfc2865.State_Get(r.Packet)
		switch {
		case st == nil && rfc2865.UserPassword_GetString(r.Packet) == "pw":
			p := r.Response(layeh.CodeAccessChallenge)
			rfc2865.State_SetString(p, "step2")
			rfc2865.ReplyMessage_SetString(p, "Enter your OTP")
			w.Write(p)
		case string(st) == "step2" && rfc2865.UserPassword_GetString(r.Packet) == "123456":
			w.Write(r.Response(layeh.CodeAccessAccept))
		default:
			w.Write(r.Response(layeh.CodeAccessReject))
		}
	})
	c := testClient(t, ts.addr)
	res, err := c.Authenticate(context.Background(), Request{User: "bob", Password: "pw"})
	if err != nil || res.Outcome != Challenge || string(res.State) != "step2" || res.Message != "Enter your OTP" {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = c.Authenticate(context.Background(), Request{User: "bob", Password: "123456", State: res.State})
	if err != nil || res.Outcome != Accept {
		t.Fatalf("%+v %v", res, err)
	}
}

// silent is a UDP socket that reads and never answers.
func silent(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestFailover(t *testing.T) {
	ts := startServer(t, accept(nil))
	// A dead port (ICMP unreachable) and a silent server before the live one.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	c := testClient(t, dead, silent(t), ts.addr)
	start := time.Now()
	res, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	if err != nil || res.Outcome != Accept || res.Server != ts.addr {
		t.Fatalf("%+v %v", res, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failover took %s", d)
	}
	if c.Counters.Failovers.Load() != 2 {
		t.Fatalf("failovers %d", c.Counters.Failovers.Load())
	}
	// The live server is preferred from now on: no further failover.
	if _, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if c.Counters.Failovers.Load() != 2 {
		t.Fatalf("failovers %d after the second login", c.Counters.Failovers.Load())
	}
}

func TestTimeout(t *testing.T) {
	c := testClient(t, silent(t))
	start := time.Now()
	_, err := c.Authenticate(context.Background(), Request{User: "alice", Password: "pw"})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err %v", err)
	}
	// 2 tries of 200 ms.
	if d := time.Since(start); d < 350*time.Millisecond || d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
	if c.Counters.NoAnswer.Load() != 2 || c.Counters.Unreachable.Load() != 1 {
		t.Fatalf("no-answer %d unreachable %d", c.Counters.NoAnswer.Load(), c.Counters.Unreachable.Load())
	}
}

package ctl

// Streamed replies (show events): the server writes one reply per line
// until the client closes the connection or vpnd stops.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Streamer answers a streaming request: it calls send for each reply
// until ctx ends (the client went away, or the socket closes) or send
// fails.
type Streamer interface {
	StreamCtl(ctx context.Context, req Request, send func(Reply) error)
}

// serveStream runs a streaming request on c. done is closed when the
// listener closes.
func serveStream(c net.Conn, st Streamer, req Request, done <-chan struct{}) {
	c.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// The client sends nothing more: a read returns when it closes.
		io.Copy(io.Discard, io.LimitReader(c, MaxRequest))
		cancel()
	}()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	enc := json.NewEncoder(c)
	st.StreamCtl(ctx, req, func(r Reply) error {
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		return enc.Encode(r)
	})
}

// Stream sends a streaming request to the socket at path and calls f for
// each reply until ctx ends (nil), the server closes the stream (nil) or
// a reply says ok=false (its error).
func Stream(ctx context.Context, path string, req Request, f func(Reply)) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("connecting to vpnd's control socket: %w (is vpnd running, with this ctl-socket?)", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(data); err != nil {
		return err
	}
	// No half-close: the server takes the end of the connection for the
	// end of the stream.
	dec := json.NewDecoder(c)
	for {
		var rep Reply
		if err := dec.Decode(&rep); err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading vpnd's reply: %w", err)
		}
		if !rep.OK {
			return errors.New(rep.Error)
		}
		f(rep)
	}
}

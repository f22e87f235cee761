// Package logging builds the structured loggers of vpnd and vpnc.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel maps debug, info, warn and error to slog levels.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// Format is a log output format.
type Format string

const (
	// FormatText is slog's key=value lines, for people and journald.
	FormatText Format = "text"
	// FormatJSON is one JSON object per line, for log shippers.
	FormatJSON Format = "json"
)

// ParseFormat accepts text and json ("" means text).
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatText:
		return FormatText, nil
	case FormatJSON:
		return FormatJSON, nil
	}
	return "", fmt.Errorf("unknown log format %q (want text or json)", s)
}

// New returns a text logger writing to w at the given level.
func New(w io.Writer, level string) (*slog.Logger, error) {
	return NewFormat(w, level, string(FormatText))
}

// NewFormat returns a logger writing to w at the given level, as text or
// JSON lines.
func NewFormat(w io.Writer, level, format string) (*slog.Logger, error) {
	l, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	f, err := ParseFormat(format)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: l}
	if f == FormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

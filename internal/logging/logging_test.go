package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewFormat(t *testing.T) {
	var b bytes.Buffer
	log, err := NewFormat(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("tunnel up", "address", "10.77.0.2")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON line: %q: %v", b.String(), err)
	}
	if m["msg"] != "tunnel up" || m["address"] != "10.77.0.2" || m["level"] != "INFO" {
		t.Errorf("got %v", m)
	}
	b.Reset()
	log, _ = NewFormat(&b, "debug", "text")
	log.Debug("x", "k", "v")
	if !strings.Contains(b.String(), "level=DEBUG msg=x k=v") {
		t.Errorf("text: %q", b.String())
	}
	if _, err := NewFormat(&b, "info", "xml"); err == nil || !strings.Contains(err.Error(), `unknown log format "xml"`) {
		t.Errorf("xml: %v", err)
	}
}

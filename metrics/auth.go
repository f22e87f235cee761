package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// RequireToken wraps h so that it answers only requests carrying
// "Authorization: Bearer TOKEN" (Prometheus's authorization or
// bearer_token_file settings send it); others get 401 and are logged at
// most every 10 s. An empty token returns h unchanged.
func RequireToken(token string, h http.Handler, log *slog.Logger) http.Handler {
	if token == "" {
		return h
	}
	// Compare digests: constant time whatever the lengths.
	want := sha256.Sum256([]byte(token))
	var refused atomic.Uint64
	var lastLog atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			n := refused.Add(1)
			now := time.Now().UnixNano()
			if last := lastLog.Load(); now-last >= int64(10*time.Second) && lastLog.CompareAndSwap(last, now) {
				log.Warn("metrics: request refused: no or wrong bearer token (metrics-token)",
					"remote", r.RemoteAddr, "refused-total", n)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="kvpn metrics"`)
			http.Error(w, "401 unauthorized: metrics-token required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

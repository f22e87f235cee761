//go:build !linux

package ktlsbridge

// peekReadable reports readable at once where MSG_PEEK is not wired up:
// WaitRead then does not wait, and the read that follows blocks instead.
func peekReadable(uintptr) bool { return true }

//go:build !race

// Package race tells tests whether the race detector is on: it allocates
// on its own, so allocation-count assertions only hold without it.
package race

// Enabled reports whether the binary was built with -race.
const Enabled = false

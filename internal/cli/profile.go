package cli

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// Main runs a command's run function on os.Args and exits with its code,
// under StartProfile.
func Main(name string, run func(args []string, stderr io.Writer) int) {
	stop := StartProfile(name)
	code := run(os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// StartProfile writes a CPU profile of the whole run to
// $KVPN_CPUPROFILE.NAME when KVPN_CPUPROFILE is set (for the benchmarks:
// go tool pprof bin/NAME $KVPN_CPUPROFILE.NAME). The returned function
// stops it; call it before exiting.
func StartProfile(name string) (stop func()) {
	base := os.Getenv("KVPN_CPUPROFILE")
	if base == "" {
		return func() {}
	}
	f, err := os.Create(base + "." + name)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: KVPN_CPUPROFILE: %v\n", name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

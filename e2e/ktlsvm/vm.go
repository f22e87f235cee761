// Package ktlsvm runs tests against a real kernel TLS implementation: it boots
// Debian's stock kernel (which has kTLS as modules) in a small software-emulated
// QEMU VM with a busybox initramfs, runs a shell script there, and reports the
// result read from the serial console.
//
// The machines this project runs on have no kTLS in their own kernel, and
// their /dev/kvm cannot boot a stock kernel, so the VM runs under TCG
// (-accel tcg -cpu max). That is 25x to 170x slower than native: use it for
// correctness, never for speed. Recipe and pitfalls: /work/shared/notes/ktls-vm.md.
//
// Typical use from another package's test:
//
//	dir, _ := ktlsvm.Kernel(t) // optional: Run calls it
//	bin := ktlsvm.BuildStatic(t, "kvpn/ktlsbridge", true)
//	out, ok := ktlsvm.Run(t, ktlsvm.Config{
//		Binaries: map[string]string{"ktlsbridge.test": bin},
//		Script:   "ktlsbridge.test -test.v -test.run 'KTLS'",
//		Timeout:  2 * time.Minute,
//	})
//	if !ok { t.Fatal("VM test failed") } // Run has logged the console output
package ktlsvm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvpn/internal/testenv"
)

// Console markers printed by the VM's /init. Each starts its own line.
const (
	MarkerBooted      = "KVPN-VM-BOOTED"         // modules loaded, lo up
	MarkerScriptBegin = "KVPN-VM-SCRIPT-BEGIN"   // the Script starts
	MarkerScriptEnd   = "KVPN-VM-SCRIPT-END"     // followed by " rc=N"
	MarkerStatBegin   = "KVPN-VM-TLS-STAT-BEGIN" // /proc/net/tls_stat of the initial namespace, after the script
	MarkerStatEnd     = "KVPN-VM-TLS-STAT-END"
	MarkerResult      = "KVPN-VM-RESULT:" // "KVPN-VM-RESULT: PASS" or "KVPN-VM-RESULT: FAIL ..."
)

const (
	resultPass = MarkerResult + " PASS"
	resultFail = MarkerResult + " FAIL"

	cacheEnv         = "KVPN_KTLS_CACHE" // root of the kernel cache
	verboseEnv       = "KVPN_VM_VERBOSE" // 1: copy the console to stderr as it arrives
	defaultCacheRoot = "/var/cache/kvpn-ktls"
	completeFile     = ".complete"     // marks a finished cache entry
	releaseFile      = "release"       // the kernel release (uname -r) of a cache entry
	vmLockName       = "vm.lock"       // one VM at a time on this machine
	downloadLockName = "download.lock" // one kernel download at a time

	metaPackage = "linux-image-amd64" // Debian's "current kernel" package
	busyboxPath = "/bin/busybox"      // must be busybox-static
	qemuBinary  = "qemu-system-x86_64"
	xzMagic     = "\xfd7zXZ\x00" // start of the xz stream inside vmlinuz
	elfMagic    = "\x7fELF"

	defaultTimeout    = 3 * time.Minute
	defaultMemoryMB   = 512
	defaultCPUs       = 2
	defaultKernelArgs = "console=ttyS0 quiet panic=-1"

	initScriptVMPath = "/init"
	userScriptVMPath = "/kvpn-script.sh"
	moduleListVMPath = "/kvpn-modules"     // load order, one file name a line
	moduleDirVMPath  = "/lib/modules/kvpn" // the .ko files, flat
	hostRootFlagPath = "/kvpn-hostroot"    // present: run the script in the host's root (Config.HostRoot)
	hostRootTag      = "kvpnhostroot"      // the 9p mount tag of the host's /
)

// HostRootModules are loaded, in addition to Modules, for Config.HostRoot:
// the 9p transport over virtio-pci, overlayfs for a writable layer, the
// netfilter modules the e2e tests' nft rules use (filter, counter, ct,
// DNAT/SNAT), and tcp_diag, without which `ss -K` (the tests' way to cut a
// TCP connection) finds no socket and silently does nothing. The guest
// cannot autoload modules (it has no modprobe), so each is named here.
var HostRootModules = []string{
	"virtio_pci", "9pnet_virtio", "9p", "overlay",
	"nf_tables", "nft_ct", "nft_nat", "nft_chain_nat",
	"tcp_diag",
}

// Modules are loaded with insmod, in this order (each after its
// dependencies, as modprobe --show-depends resolves them on the host), before
// the script runs. The guest has no modprobe, and the kernel's TLS code looks
// its ciphers up by name when TLS_TX/TLS_RX is set: without the crypto
// modules that fails with ENOENT although tls.ko is loaded.
var Modules = []string{
	"cryptd", "crypto_simd", "aesni-intel", "ghash-clmulni-intel", "gcm", "ctr", "ccm",
	"gf128mul", "ghash-generic", "libchacha", "chacha-x86_64", "poly1305-x86_64",
	"chacha20poly1305", "tls", "tun", "veth", "e1000",
}

// Config describes one VM run.
type Config struct {
	// Binaries: name in the VM's /bin -> host path of a static binary
	// (CGO_ENABLED=0, see BuildStatic). Run refuses dynamic binaries.
	Binaries map[string]string
	// Files: absolute path in the VM -> host path of any other file
	// (certificates, configs). Copied with their host permission bits.
	Files map[string]string
	// Script is run by /init with "sh -e -o pipefail" (busybox ash;
	// PATH=/bin; stdin /dev/null) after the modules are loaded and lo is up,
	// in directory /. Its exit status decides PASS/FAIL. It runs in the
	// initial network namespace. Its output goes to the serial console.
	Script string
	// Timeout for the whole VM (boot, script, poweroff). Default 3 minutes,
	// capped by the test's own deadline.
	Timeout time.Duration
	// Args is appended to the kernel command line. Parameters of the form
	// KEY=VALUE that the kernel does not know end up in the script's
	// environment. KVPN_STRICT=1 is passed on this way when set on the
	// host, so test binaries in the VM fail instead of skipping too.
	Args string
	// Modules are loaded after the default Modules (names as modprobe
	// takes them; dependencies are added).
	Modules []string
	// NIC, if set, replaces "-nic none": e.g.
	// "user,model=e1000,restrict=on,hostfwd=tcp:127.0.0.1:8443-10.0.2.15:8443".
	// The forward listens in the network namespace QEMU runs in (that of
	// the test process). In the guest: ip addr add 10.0.2.15/24 dev eth0;
	// ip link set eth0 up (e1000.ko is loaded by default).
	NIC string
	// MemoryMB of guest RAM (default 512); CPUs (default 2).
	MemoryMB, CPUs int
	// HostRoot runs the Script in the host's own file system instead of
	// the busybox initramfs: the host's / is shared read-only over 9p
	// (virtio), a tmpfs overlay makes it writable inside the guest only
	// (nothing the guest writes reaches the host), and the script runs
	// with bash chrooted there, with fresh /proc, /sys, /dev and /run.
	// So the script has every tool and library the host has (ip, nft,
	// openconnect, ocserv, dynamically linked test binaries) at the same
	// paths. Binaries and Files still go into the initramfs, which the
	// script does not see. HostRootModules are loaded too.
	HostRoot bool
	// OnLine, if set, is called with each console line (escape sequences
	// stripped, no newline) as it arrives, from Run's goroutine: e.g. to
	// start a host-side peer when the script prints that it listens.
	OnLine func(line string)
}

// initScript is the VM's /init. It prints the markers above; the kernel
// passes unknown KEY=VALUE command line parameters to it as environment.
const initScript = `#!/bin/busybox sh
export PATH=/bin
echo
mkdir -p /proc /sys /dev /tmp /run /var/run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
	echo "` + resultFail + ` $*"
	poweroff -f
	sleep 60
}
while read -r m; do
	insmod "` + moduleDirVMPath + `/$m" || fail "insmod $m"
done < ` + moduleListVMPath + `
ip link set lo up || fail "ip link set lo up"
echo "` + MarkerBooted + ` uptime=$(cut -d' ' -f1 /proc/uptime)"
run="sh -e -o pipefail ` + userScriptVMPath + `"
if [ -e ` + hostRootFlagPath + ` ]; then
	mkdir -p /host /overlay /newroot
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 ` + hostRootTag + ` /host || fail "mount 9p"
	mount -t tmpfs -o mode=0755 tmpfs /overlay || fail "mount tmpfs"
	mkdir -p /overlay/upper /overlay/work
	mount -t overlay -o lowerdir=/host,upperdir=/overlay/upper,workdir=/overlay/work overlay /newroot || fail "mount overlay"
	mount -t proc proc /newroot/proc || fail "mount proc"
	mount -t sysfs sysfs /newroot/sys || fail "mount sysfs"
	mount -t devtmpfs devtmpfs /newroot/dev || fail "mount dev"
	mkdir -p /newroot/dev/pts /newroot/dev/shm
	mount -t devpts devpts /newroot/dev/pts
	mount -t tmpfs tmpfs /newroot/dev/shm
	mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "mount run"
	mkdir -p /newroot/run/netns
	cp ` + userScriptVMPath + ` /newroot` + userScriptVMPath + `
	run="chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root $(env | grep '^KVPN_' | tr '\n' ' ') /bin/bash -e -o pipefail ` + userScriptVMPath + `"
fi
echo "` + MarkerScriptBegin + `"
cd /
$run </dev/null
rc=$?
echo
echo "` + MarkerScriptEnd + ` rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "` + MarkerStatBegin + `"
cat /proc/net/tls_stat 2>&1
echo "` + MarkerStatEnd + `"
if [ "$rc" -eq 0 ]; then echo "` + resultPass + `"; else echo "` + resultFail + ` rc=$rc"; fi
poweroff -f
sleep 60
`

// Run boots the VM with cfg and returns the serial console output (escape
// sequences and carriage returns stripped) and whether the script passed
// (exited 0, shown by the line "KVPN-VM-RESULT: PASS"). On failure, timeout
// included, it logs the console output with t.Logf; it fails the test only
// when the VM cannot be set up. Only one VM runs at a time on the machine (a
// lock file in the cache directory serializes callers across processes).
func Run(t testing.TB, cfg Config) (output string, passed bool) {
	t.Helper()
	qemu := requireTools(t, qemuBinary)[0]
	requireStaticBusybox(t)
	start := time.Now()
	kdir, release := Kernel(t)

	work := t.TempDir()
	initrd := filepath.Join(work, "initramfs.cpio")
	want := append([]string{}, Modules...)
	if cfg.HostRoot {
		want = append(want, HostRootModules...)
	}
	mods, err := resolveModules(kdir, release, append(want, cfg.Modules...))
	if err != nil {
		t.Fatalf("ktlsvm: %v", err)
	}
	if err := buildInitramfs(initrd, kdir, release, mods, cfg); err != nil {
		t.Fatalf("ktlsvm: initramfs: %v", err)
	}
	if st, err := os.Stat(initrd); err == nil {
		t.Logf("ktlsvm: initramfs %.1f MB with %d modules, built in %v", float64(st.Size())/1e6, len(mods), time.Since(start).Round(time.Millisecond))
	}

	mem, cpus := cfg.MemoryMB, cfg.CPUs
	if mem <= 0 {
		mem = defaultMemoryMB
	}
	if cpus <= 0 {
		cpus = defaultCPUs
	}
	nic := []string{"-nic", "none"}
	if cfg.NIC != "" {
		nic = []string{"-nic", cfg.NIC}
	}
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem) + "M",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
	}
	args = append(args, nic...)
	if cfg.HostRoot {
		// multidevs=remap: the host's / spans several file systems, whose
		// inode numbers would collide in one 9p mount.
		args = append(args, "-virtfs", "local,path=/,mount_tag="+hostRootTag+",security_model=none,readonly=on,multidevs=remap")
	}
	cmdline := defaultKernelArgs
	if testenv.Strict() {
		// Tests run inside the VM apply the same policy as outside.
		cmdline += " " + testenv.StrictEnv + "=1"
	}
	args = append(args,
		"-kernel", filepath.Join(kdir, "vmlinux"),
		"-initrd", initrd,
		"-append", strings.TrimSpace(cmdline+" "+cfg.Args))

	unlock := lockFile(t, filepath.Join(cacheRoot(), vmLockName))
	defer unlock()

	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			if left := time.Until(dl) - 10*time.Second; left < timeout {
				timeout = max(left, time.Second)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Dir = work
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("ktlsvm: %v", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	bootStart := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("ktlsvm: starting %s: %v", qemu, err)
	}

	var raw bytes.Buffer
	var booted, scriptEnd time.Duration
	verbose := os.Getenv(verboseEnv) == "1"
	r := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		raw.Write(line)
		if len(line) > 0 {
			clean := cleanConsole(string(line))
			if verbose {
				fmt.Fprint(os.Stderr, "vm| "+clean)
			}
			if cfg.OnLine != nil {
				cfg.OnLine(strings.TrimSuffix(clean, "\n"))
			}
			// Markers may follow output without a newline (the firmware's
			// "Booting from ROM..", a script's last printf).
			switch {
			case booted == 0 && strings.Contains(clean, MarkerBooted):
				booted = time.Since(bootStart)
			case scriptEnd == 0 && strings.Contains(clean, MarkerScriptEnd):
				scriptEnd = time.Since(bootStart)
			}
		}
		if err != nil {
			break
		}
	}
	waitErr := cmd.Wait()
	total := time.Since(bootStart)

	output = cleanConsole(raw.String())
	// PASS counts only if /init printed it after the script ended with 0
	// (a script that printed the marker itself and then hung does not pass).
	end := strings.LastIndex(output, MarkerScriptEnd+" rc=0 ")
	passed = end >= 0 && resultLine(output) == resultPass && strings.LastIndex(output, MarkerResult) > end
	timedOut := ctx.Err() != nil
	script := time.Duration(0)
	if booted > 0 && scriptEnd > 0 {
		script = scriptEnd - booted
	}
	t.Logf("ktlsvm: kernel %s; VM ready (modules, lo) after %v, script %v, VM total %v, Run total %v",
		release, booted.Round(time.Millisecond), script.Round(time.Millisecond), total.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	if !passed {
		why := resultLine(output)
		switch {
		case timedOut:
			why = fmt.Sprintf("VM timed out after %v", timeout)
		case why == "":
			why = fmt.Sprintf("no %s line (qemu: %v)", MarkerResult, waitErr)
		}
		t.Logf("ktlsvm: script did not pass: %s\n--- qemu stderr ---\n%s--- console ---\n%s--- end of console ---", why, stderr.String(), output)
	}
	return output, passed
}

// Lines the console shows from QEMU's firmware-less boot and the kernel's
// terminal handling: CSI sequences, charset selection, resets.
var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>cDEHMNOZ78]`)

func cleanConsole(s string) string {
	s = escapes.ReplaceAllString(s, "")
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\x00", "")
}

// resultLine returns the last result marker and the rest of its line.
func resultLine(output string) string {
	i := strings.LastIndex(output, MarkerResult)
	if i < 0 {
		return ""
	}
	line, _, _ := strings.Cut(output[i:], "\n")
	return strings.TrimSpace(line)
}

// TLSStat returns the counters of /proc/net/tls_stat that /init printed
// after the script (initial network namespace only). TlsTxSw/TlsRxSw count
// sockets ever configured; TlsCurr* count the open ones, which are 0 by then
// if the script's processes have exited: print the file from the script
// while the sockets are open to see those. ok is false if the block is
// missing (the VM did not get that far, or tls.ko is not loaded).
func TLSStat(output string) (stat map[string]int64, ok bool) {
	i := strings.LastIndex(output, MarkerStatBegin+"\n")
	if i < 0 {
		return nil, false
	}
	block := output[i+len(MarkerStatBegin)+1:]
	j := strings.Index(block, MarkerStatEnd)
	if j < 0 {
		return nil, false
	}
	stat = ParseTLSStat(block[:j])
	return stat, len(stat) > 0
}

// ParseTLSStat parses "Name value" lines as /proc/net/tls_stat has them.
// Lines that do not look like a Tls counter are ignored.
func ParseTLSStat(text string) map[string]int64 {
	stat := map[string]int64{}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(f[0], "Tls") {
			continue
		}
		if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			stat[f[0]] = v
		}
	}
	return stat
}

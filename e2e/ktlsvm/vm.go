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
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
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

func cacheRoot() string {
	if d := os.Getenv(cacheEnv); d != "" {
		return d
	}
	return defaultCacheRoot
}

var kernelMemo struct {
	sync.Mutex
	dir, release string
}

// Kernel returns the directory of the cached Debian kernel (dir/vmlinux,
// dir/boot/config-*, dir/lib/modules/<release>/ with modules.dep) and its
// release (uname -r, e.g. 6.1.0-56-amd64; modprobe -d dir -S release works on
// it). The kernel is the one linux-image-amd64 points to now; it is fetched
// with apt-get download and unpacked once into $KVPN_KTLS_CACHE (default
// /var/cache/kvpn-ktls)/<release>_<package version>/. If apt cannot tell or
// fetch the current version, the newest cached kernel is used.
func Kernel(t testing.TB) (dir, release string) {
	t.Helper()
	kernelMemo.Lock()
	defer kernelMemo.Unlock()
	if kernelMemo.dir != "" {
		return kernelMemo.dir, kernelMemo.release
	}
	if os.Getenv(cacheEnv) == "" {
		testenv.RequireRoot(t)
	}
	tools := requireTools(t, "apt-get", "apt-cache", "dpkg-deb", "depmod", "modprobe", "xz")
	aptGet, aptCache, dpkgDeb, depmod, xz := tools[0], tools[1], tools[2], tools[3], tools[5]
	root := cacheRoot()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("ktlsvm: kernel cache: %v", err)
	}
	start := time.Now()

	pkg, ver, err := resolveKernelPackage(aptGet, aptCache)
	if err != nil {
		dir, release, cerr := newestCached(root)
		if cerr != nil {
			missing(t, "needs Debian's kernel package", fmt.Sprintf("%v; and no cached kernel in %s: %v", err, root, cerr))
		}
		t.Logf("ktlsvm: %v; using the cached kernel %s", err, dir)
		kernelMemo.dir, kernelMemo.release = dir, release
		return dir, release
	}
	key := strings.TrimPrefix(pkg, "linux-image-") + "_" + ver
	dir = filepath.Join(root, key)
	if release, ok := cached(dir); ok {
		kernelMemo.dir, kernelMemo.release = dir, release
		return dir, release
	}

	unlock := lockFile(t, filepath.Join(root, downloadLockName))
	defer unlock()
	if release, ok := cached(dir); ok { // another process was faster
		kernelMemo.dir, kernelMemo.release = dir, release
		return dir, release
	}
	// Under the lock, staging directories are leftovers of killed runs.
	if stale, _ := filepath.Glob(filepath.Join(root, ".staging-*")); len(stale) > 0 {
		for _, d := range stale {
			os.RemoveAll(d)
		}
	}
	release, err = fetchKernel(t, root, dir, pkg, ver, aptGet, dpkgDeb, depmod, xz)
	if err != nil {
		if odir, orel, cerr := newestCached(root); cerr == nil {
			t.Logf("ktlsvm: fetching %s=%s: %v; using the cached kernel %s", pkg, ver, err, odir)
			kernelMemo.dir, kernelMemo.release = odir, orel
			return odir, orel
		}
		missing(t, "needs Debian's kernel package", fmt.Sprintf("fetching %s=%s: %v", pkg, ver, err))
	}
	t.Logf("ktlsvm: fetched and unpacked %s %s (kernel %s) into %s in %v", pkg, ver, release, dir, time.Since(start).Round(time.Millisecond))
	kernelMemo.dir, kernelMemo.release = dir, release
	return dir, release
}

// resolveKernelPackage asks apt which image package linux-image-amd64's
// candidate depends on, e.g. linux-image-6.1.0-56-amd64 at 6.1.192-2. With
// empty package lists (a fresh container) it runs apt-get update once.
func resolveKernelPackage(aptGet, aptCache string) (pkg, ver string, err error) {
	depRE := regexp.MustCompile(`(linux-image-[0-9][^\s,|()]*)\s*\(=\s*([^)\s]+)\)`)
	for attempt := 0; attempt < 2; attempt++ {
		out, err := exec.Command(aptCache, "show", "--no-all-versions", metaPackage).CombinedOutput()
		if err == nil {
			for line := range strings.Lines(string(out)) {
				if !strings.HasPrefix(line, "Depends:") {
					continue
				}
				if m := depRE.FindStringSubmatch(line); m != nil {
					return m[1], m[2], nil
				}
			}
		}
		if attempt == 0 && os.Geteuid() == 0 {
			if uerr := exec.Command(aptGet, "update", "-qq").Run(); uerr != nil {
				return "", "", fmt.Errorf("apt-cache show %s: %v; apt-get update: %v", metaPackage, err, uerr)
			}
			continue
		}
		return "", "", fmt.Errorf("apt-cache show %s: no linux-image dependency (%v): %s", metaPackage, err, firstLines(out, 3))
	}
	return "", "", errors.New("unreachable")
}

func cached(dir string) (release string, ok bool) {
	if _, err := os.Stat(filepath.Join(dir, completeFile)); err != nil {
		return "", false
	}
	b, err := os.ReadFile(filepath.Join(dir, releaseFile))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

func newestCached(root string) (dir, release string, err error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", "", err
	}
	var best time.Time
	for _, e := range ents {
		d := filepath.Join(root, e.Name())
		rel, ok := cached(d)
		if !ok {
			continue
		}
		st, err := os.Stat(filepath.Join(d, completeFile))
		if err == nil && st.ModTime().After(best) {
			best, dir, release = st.ModTime(), d, rel
		}
	}
	if dir == "" {
		return "", "", errors.New("no complete cache entry")
	}
	return dir, release, nil
}

// fetchKernel downloads pkg=ver into a staging directory under root, unpacks
// it, cuts vmlinux out of vmlinuz, runs depmod and renames the result to dir.
func fetchKernel(t testing.TB, root, dir, pkg, ver, aptGet, dpkgDeb, depmod, xz string) (string, error) {
	stage, err := os.MkdirTemp(root, ".staging-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	// root owns the staging dir; the _apt sandbox user could not write to it.
	dl := exec.Command(aptGet, "download", "-o", "APT::Sandbox::User=root", pkg+"="+ver)
	dl.Dir = stage
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download: %v: %s", err, firstLines(out, 5))
	}
	debs, _ := filepath.Glob(filepath.Join(stage, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download left %d .deb files", len(debs))
	}
	tree := filepath.Join(stage, "tree")
	if out, err := exec.Command(dpkgDeb, "-x", debs[0], tree).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x: %v: %s", err, firstLines(out, 5))
	}
	os.Remove(debs[0])
	os.RemoveAll(filepath.Join(tree, "usr")) // docs only
	rels, _ := os.ReadDir(filepath.Join(tree, "lib", "modules"))
	if len(rels) != 1 {
		return "", fmt.Errorf("%s ships %d module trees, want 1", pkg, len(rels))
	}
	release := rels[0].Name()
	if err := extractVmlinux(filepath.Join(tree, "boot", "vmlinuz-"+release), filepath.Join(tree, "vmlinux"), xz); err != nil {
		return "", err
	}
	if out, err := exec.Command(depmod, "-b", tree, release).CombinedOutput(); err != nil {
		return "", fmt.Errorf("depmod: %v: %s", err, firstLines(out, 5))
	}
	if err := os.WriteFile(filepath.Join(tree, releaseFile), []byte(release+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tree, completeFile), []byte(pkg+"="+ver+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dir) // an incomplete earlier attempt
	if err := os.Rename(tree, dir); err != nil {
		return "", err
	}
	return release, nil
}

// extractVmlinux cuts the uncompressed kernel out of a bzImage: its payload
// is an xz stream. Booting vmlinux directly (PVH entry) skips the guest's
// decompressor, which takes seconds under TCG. The first offset holding the
// xz magic whose stream decompresses to an ELF file wins.
func extractVmlinux(vmlinuz, out, xz string) error {
	img, err := os.ReadFile(vmlinuz)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	var lastErr error = fmt.Errorf("%s: no xz stream found", vmlinuz)
	for off := 0; ; {
		i := bytes.Index(img[off:], []byte(xzMagic))
		if i < 0 {
			break
		}
		off += i
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		cmd := exec.Command(xz, "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(img[off:])
		cmd.Stdout = f
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err = cmd.Run()
		f.Close()
		if err == nil {
			if head, herr := readHead(tmp, 4); herr == nil && string(head) == elfMagic {
				return os.Rename(tmp, out)
			}
			lastErr = fmt.Errorf("xz stream at offset %d is not an ELF file", off)
		} else {
			lastErr = fmt.Errorf("xz at offset %d: %v: %s", off, err, firstLines(stderr.Bytes(), 2))
		}
		off++
	}
	os.Remove(tmp)
	return lastErr
}

func readHead(name string, n int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = io.ReadFull(f, b)
	return b, err
}

// resolveModules turns module names into module files (relative to the
// release's module directory), each after its dependencies, without
// duplicates. Built-in modules are skipped.
func resolveModules(kdir, release string, names []string) ([]string, error) {
	modprobe, err := lookTool("modprobe")
	if err != nil {
		return nil, err
	}
	base := filepath.Join(kdir, "lib", "modules", release)
	seen := map[string]bool{}
	var files []string
	for _, name := range names {
		out, err := exec.Command(modprobe, "-d", kdir, "-S", release, "--show-depends", name).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("modprobe --show-depends %s: %v: %s", name, err, firstLines(out, 3))
		}
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "insmod" {
				continue // "builtin NAME"
			}
			rel, err := filepath.Rel(base, f[1])
			if err != nil || strings.HasPrefix(rel, "..") {
				return nil, fmt.Errorf("module %s outside %s", f[1], base)
			}
			if !seen[rel] {
				seen[rel] = true
				files = append(files, rel)
			}
		}
	}
	return files, nil
}

// buildInitramfs writes the VM's root file system: busybox with its applets
// as symlinks in /bin, the modules and their load order, /init, the script,
// the caller's binaries and files, and /dev/console (the kernel opens it for
// init before devtmpfs is mounted; without it init has no output).
func buildInitramfs(name, kdir, release string, mods []string, cfg Config) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	c := newCPIO(f)
	for _, d := range []string{"/bin", "/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/root", moduleDirVMPath} {
		if err := c.mkdirAll(d); err != nil {
			return err
		}
	}
	if err := c.chardev("/dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := c.chardev("/dev/null", 0o666, 1, 3); err != nil {
		return err
	}
	if err := c.copyFile("/bin/busybox", 0o755, busyboxPath); err != nil {
		return err
	}
	applets, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %v", err)
	}
	names := make([]string, 0, len(cfg.Binaries))
	for n := range cfg.Binaries {
		if strings.Contains(n, "/") || n == "" || n == "busybox" {
			return fmt.Errorf("binary name %q: want a plain file name other than busybox", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, a := range strings.Fields(string(applets)) {
		if _, mine := cfg.Binaries[a]; !mine && a != "busybox" {
			if err := c.symlink("/bin/"+a, "busybox"); err != nil {
				return err
			}
		}
	}
	for _, n := range names {
		if err := checkStatic(cfg.Binaries[n]); err != nil {
			return err
		}
		if err := c.copyFile("/bin/"+n, 0o755, cfg.Binaries[n]); err != nil {
			return err
		}
	}
	files := make([]string, 0, len(cfg.Files))
	for p := range cfg.Files {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("file %q: want an absolute path in the VM", p)
		}
		files = append(files, p)
	}
	sort.Strings(files)
	for _, p := range files {
		st, err := os.Stat(cfg.Files[p])
		if err != nil {
			return err
		}
		if err := c.copyFile(p, uint32(st.Mode().Perm()), cfg.Files[p]); err != nil {
			return err
		}
	}
	base := filepath.Join(kdir, "lib", "modules", release)
	var order strings.Builder
	for i, m := range mods {
		// Flat names with an index prefix: no directory tree needed.
		vm := fmt.Sprintf("%02d-%s", i, filepath.Base(m))
		if err := c.copyFile(moduleDirVMPath+"/"+vm, 0o644, filepath.Join(base, m)); err != nil {
			return err
		}
		order.WriteString(vm + "\n")
	}
	if err := c.file(moduleListVMPath, 0o644, []byte(order.String())); err != nil {
		return err
	}
	if err := c.file(initScriptVMPath, 0o755, []byte(initScript)); err != nil {
		return err
	}
	if err := c.file(userScriptVMPath, 0o755, []byte(cfg.Script+"\n")); err != nil {
		return err
	}
	if cfg.HostRoot {
		if err := c.file(hostRootFlagPath, 0o644, nil); err != nil {
			return err
		}
	}
	if err := c.close(); err != nil {
		return err
	}
	return f.Close()
}

// checkStatic refuses dynamically linked ELF files: the VM has no libc, and
// such a binary fails there with a confusing "not found".
func checkStatic(name string) error {
	ef, err := elf.Open(name)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0 (BuildStatic)", name)
		}
	}
	return nil
}

func requireStaticBusybox(t testing.TB) {
	t.Helper()
	testenv.RequireCommand(t, busyboxPath)
	if err := checkStatic(busyboxPath); err != nil {
		missing(t, "needs busybox-static", err.Error())
	}
}

// BuildStatic builds the Go package pkg (an import path such as
// "kvpn/cmd/vpnd", or a directory relative to the test's directory) as a
// static binary (CGO_ENABLED=0, stripped) into the test's temporary directory
// and returns its path. With test set it builds the package's test binary
// (go test -c), named after the package with ".test" appended; run it in the
// VM with -test.v, -test.run and so on.
func BuildStatic(t testing.TB, pkg string, test bool) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
		testenv.RequireCommand(t, gobin)
	}
	name := filepath.Base(strings.TrimSuffix(pkg, "/..."))
	if name == "." || name == "/" {
		if wd, err := filepath.Abs(pkg); err == nil {
			name = filepath.Base(wd)
		}
	}
	var args []string
	if test {
		name += ".test"
		args = []string{"test", "-c"}
	} else {
		args = []string{"build"}
	}
	out := filepath.Join(t.TempDir(), name)
	args = append(args, "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd := exec.Command(gobin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ktlsvm: go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("ktlsvm: go %s wrote no binary (a package without tests?): %v", strings.Join(args, " "), err)
	}
	if err := checkStatic(out); err != nil {
		t.Fatalf("ktlsvm: %v", err)
	}
	t.Logf("ktlsvm: built %s in %v", name, time.Since(start).Round(time.Millisecond))
	return out
}

// lookTool finds a command in PATH or in the sbin directories a non-login
// root shell may lack.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin", name)
}

func requireTools(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := lookTool(n)
		if err != nil {
			testenv.RequireCommand(t, n) // skips, or fails under KVPN_STRICT=1
			t.Fatalf("ktlsvm: %v", err)
		}
		paths[i] = p
	}
	return paths
}

// missing applies the testenv policy (skip loudly, fail under
// KVPN_STRICT=1) to prerequisites testenv has no helper for.
func missing(t testing.TB, what, why string) {
	t.Helper()
	if testenv.Strict() {
		t.Fatalf("FAIL (%s, and %s=1): %s", what, testenv.StrictEnv, why)
	}
	t.Skipf("SKIP (%s): %s", what, why)
}

// lockFile takes an exclusive flock on name, waiting as long as needed, and
// returns the unlock function.
func lockFile(t testing.TB, name string) func() {
	t.Helper()
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("ktlsvm: lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Logf("ktlsvm: waiting for %s (another VM or download is running)", name)
		start := time.Now()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Fatalf("ktlsvm: lock %s: %v", name, err)
		}
		t.Logf("ktlsvm: got %s after %v", name, time.Since(start).Round(time.Millisecond))
	}
	return func() { f.Close() }
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}

package ktlsvm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"kvpn/internal/testenv"
)

// The VM's kernel: Debian's linux-image-amd64, fetched with apt-get
// download once into a cache and unpacked there.

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

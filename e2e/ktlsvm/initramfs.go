package ktlsvm

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"kvpn/internal/testenv"
)

// cpioWriter writes an uncompressed initramfs in the "newc" cpio format the
// kernel unpacks. Written in Go (not with cpio(1)) so the archive can hold
// device nodes (/dev/console) without mknod on the host and without root.
// Uncompressed, because decompressing gzip in an emulated guest costs more
// than copying a few more megabytes.
type cpioWriter struct {
	w    *bufio.Writer
	off  int64
	ino  int
	dirs map[string]bool
}

const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
	cpioChr  = 0o020000
)

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{".": true, "/": true, "": true}}
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

func (c *cpioWriter) header(name string, mode uint32, size int64, rmajor, rminor uint32) error {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	if err := c.write([]byte(h)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

// mkdirAll adds every missing parent directory of name, then name itself.
func (c *cpioWriter) mkdirAll(name string) error {
	name = path.Clean("/" + name)
	if c.dirs[name] {
		return nil
	}
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	c.dirs[name] = true
	return c.header(name, cpioDir|0o755, 0, 0, 0)
}

// file adds a regular file with the given contents.
func (c *cpioWriter) file(name string, perm uint32, data []byte) error {
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := c.header(name, cpioReg|perm, int64(len(data)), 0, 0); err != nil {
		return err
	}
	if err := c.write(data); err != nil {
		return err
	}
	return c.pad()
}

// copyFile adds the host file src as name.
func (c *cpioWriter) copyFile(name string, perm uint32, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := c.header(name, cpioReg|perm, st.Size(), 0, 0); err != nil {
		return err
	}
	n, err := io.Copy(c.w, f)
	c.off += n
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("%s: changed size while copying", src)
	}
	return c.pad()
}

func (c *cpioWriter) symlink(name, target string) error {
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := c.header(name, cpioLink|0o777, int64(len(target)), 0, 0); err != nil {
		return err
	}
	if err := c.write([]byte(target)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) chardev(name string, perm, major, minor uint32) error {
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	return c.header(name, cpioChr|perm, 0, major, minor)
}

func (c *cpioWriter) close() error {
	if err := c.header("TRAILER!!!", 0, 0, 0, 0); err != nil {
		return err
	}
	return c.w.Flush()
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

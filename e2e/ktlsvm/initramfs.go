package ktlsvm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
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

package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// cpioWriter writes a cpio archive in the "newc" format the kernel unpacks
// as an initramfs. An archive appended to another (the base initramfs) is
// unpacked over it, so its files are added to, or replace, the base's.
type cpioWriter struct {
	w     *bufio.Writer
	n     int64 // bytes written, for padding
	inode uint32
	err   error
}

// newCPIOWriter returns a writer of one archive to w; Close writes the
// trailer.
func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), inode: 1}
}

// Dir adds a directory (mode 0755) named name, a path without a leading
// slash.
func (c *cpioWriter) Dir(name string) {
	c.entry(name, 0o040000|0o755, nil)
}

// File adds a regular file named name with the permission bits perm and
// the contents data.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) {
	c.entry(name, 0o100000|uint32(perm.Perm()), data)
}

// Tree adds the directory src and everything below it (directories and
// regular files; symlinks and other files are skipped) under the name dst.
func (c *cpioWriter) Tree(dst, src string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(dst+"/"+filepath.ToSlash(rel), "/.")
		switch {
		case d.IsDir():
			c.Dir(name)
		case d.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			c.File(name, info.Mode(), data)
		}
		return nil
	})
}

// entry writes one header, name and body, each padded to 4 bytes.
func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	ino := c.inode
	c.inode++
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Close writes the trailer and flushes; it returns the first error of any
// write.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, nil)
	if c.err != nil {
		return fmt.Errorf("write cpio archive: %w", c.err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("write cpio archive: %w", err)
	}
	return nil
}

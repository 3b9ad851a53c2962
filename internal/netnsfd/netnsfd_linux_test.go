package netnsfd

import (
	"errors"
	"os"
	"testing"
)

var errNotNetNS = errors.New("not a network namespace")

func TestOpen(t *testing.T) {
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		t.Skipf("no /proc/self/ns/net: %v", err)
	}
	f, err := Open("/proc/self/ns/net", -1, errNotNetNS)
	if err != nil || f == nil {
		t.Fatalf("Open(/proc/self/ns/net) = %v, %v, want a file", f, err)
	}
	defer f.Close()

	dup, err := Open("", int(f.Fd()), errNotNetNS)
	if err != nil || dup == nil {
		t.Fatalf("Open(fd %d) = %v, %v, want a file", f.Fd(), dup, err)
	}
	if dup.Fd() == f.Fd() {
		t.Errorf("Open(fd %d) returned the same descriptor, want a duplicate", f.Fd())
	}
	dup.Close()

	if got, err := Open("", -1, errNotNetNS); got != nil || err != nil {
		t.Errorf(`Open("", -1) = %v, %v, want nil, nil (the caller's namespace)`, got, err)
	}
	if _, err := Open("/proc/self/ns/uts", -1, errNotNetNS); !errors.Is(err, errNotNetNS) {
		t.Errorf("Open(/proc/self/ns/uts) = %v, want an error wrapping the sentinel", err)
	}
	other, err := os.Open("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := Open("", int(other.Fd()), errNotNetNS); !errors.Is(err, errNotNetNS) {
		t.Errorf("Open(fd of a plain file) = %v, want an error wrapping the sentinel", err)
	}
	if _, err := Open("/nonexistent/netns", -1, errNotNetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(/nonexistent/netns) = %v, want os.ErrNotExist", err)
	}
	if _, err := Open("", 1<<20, errNotNetNS); err == nil {
		t.Error("Open(fd 1<<20) = nil error, want the duplication's error")
	}
}

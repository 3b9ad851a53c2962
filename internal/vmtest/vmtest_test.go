package vmtest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// cpioEntry is one member of a newc archive, as readCPIO parses it.
type cpioEntry struct {
	Name string
	Mode uint32
	Data string
}

// readCPIO parses a newc archive up to its trailer.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	field := func(i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d: field %d: %v", off, i, err)
		}
		return int(v)
	}
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc magic at offset %d", off)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		off += 110 + namesize
		align()
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{name, uint32(mode), string(b[off : off+size])})
		off += size
		align()
	}
}

func TestCPIOWriter(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "a.txt"), []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("svcplan")
	c.File("svcplan/run.sh", 0o755, []byte("echo hi\n"))
	if err := c.Tree("svcplan/testdata", src); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	want := []cpioEntry{
		{"svcplan", 0o040755, ""},
		{"svcplan/run.sh", 0o100755, "echo hi\n"},
		{"svcplan/testdata", 0o040755, ""},
		{"svcplan/testdata/sub", 0o040755, ""},
		{"svcplan/testdata/sub/a.txt", 0o100644, "abc"},
	}
	if diff := cmp.Diff(want, readCPIO(t, buf.Bytes())); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

func TestCPIOWriterError(t *testing.T) {
	c := newCPIOWriter(failWriter{})
	c.File("x", 0o644, bytes.Repeat([]byte("x"), 8192))
	if err := c.Close(); err == nil {
		t.Error("Close() = nil after failed writes, want an error")
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{Package: ".", Run: DefaultRun, Timeout: DefaultTimeout, Memory: DefaultMemory, CPUs: DefaultCPUs}},
		{"set", Config{Package: "./ipvs", Run: "^TestX$", Timeout: time.Minute, Memory: 512, CPUs: 1},
			Config{Package: "./ipvs", Run: "^TestX$", Timeout: time.Minute, Memory: 512, CPUs: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.in.withDefaults()); diff != "" {
				t.Errorf("withDefaults() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunScript(t *testing.T) {
	t.Setenv("SVCPLAN_REQUIRE_KERNEL", "1")
	t.Setenv(CacheEnv, "/elsewhere")
	cfg := Config{Run: "^TestGuest", Args: []string{"-test.bench=It's"}, Env: []string{"FOO=a b"}}.withDefaults()
	got := runScript(cfg, 90*time.Second)
	for _, want := range []string{
		"cd /svcplan/pkg || exit 126\n",
		"export SVCPLAN_VM_GUEST='1'\n",
		"export SVCPLAN_REQUIRE_KERNEL='1'\n",
		"export FOO='a b'\n",
		"'/svcplan/pkg.test' '-test.v' '-test.run=^TestGuest' '-test.timeout=1m30s' '-test.bench=It'\\''s'\n",
	} {
		if !bytes.Contains([]byte(got), []byte(want)) {
			t.Errorf("runScript() lacks %q:\n%s", want, got)
		}
	}
	if bytes.Contains([]byte(got), []byte(CacheEnv)) {
		t.Errorf("runScript() passes %s on:\n%s", CacheEnv, got)
	}
}

func TestIsShellName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"FOO", true}, {"_x1", true}, {"a", true},
		{"", false}, {"1A", false}, {"A-B", false}, {"A B", false},
	}
	for _, tt := range tests {
		if got := isShellName(tt.in); got != tt.want {
			t.Errorf("isShellName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRequireGuestSkipsOnHost(t *testing.T) {
	if Inside() {
		t.Skip("checks the host side")
	}
	t.Setenv(RequireVMEnv, "1")
	t.Setenv("SVCPLAN_REQUIRE_KERNEL", "1")
	ran := false
	t.Run("guest", func(t *testing.T) {
		RequireGuest(t, "TestHost")
		ran = true
	})
	if ran {
		t.Error("RequireGuest did not stop a guest test on the host")
	}
}

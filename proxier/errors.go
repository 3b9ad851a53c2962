package proxier

import (
	"errors"
	"strings"

	"github.com/svcplan/svcplan/translate"
)

// Error is a proxier operation that failed, shaped like [net.OpError]:
// what was being done, in which mode, and the cause (often an applier's
// own error, such as an [iptables.RestoreError] or an
// [nftables.ApplyError], or a validation error from [translate.Compile]).
type Error struct {
	// Op is the operation: "new", "compile", "apply", "cleanup",
	// "conntrack" or "close".
	Op string
	// Mode is the proxier's mode.
	Mode translate.Mode
	// Err is the cause.
	Err error
}

// Error returns the error as text, such as
// "proxier iptables apply: iptables-restore of table nat at line 3: ...".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("proxier ")
	if e.Mode != "" {
		b.WriteString(string(e.Mode))
		b.WriteByte(' ')
	}
	b.WriteString(e.Op)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Sentinel errors.
var (
	// ErrRunning is returned by a second [Proxier.Run] while one runs.
	ErrRunning = errors.New("proxier already running")
	// ErrClosed is returned by [Proxier.Sync] and [Proxier.Run] after
	// [Proxier.Close].
	ErrClosed = errors.New("proxier closed")
	// ErrNotLinux is returned where a kernel applier is needed on
	// another system than Linux.
	ErrNotLinux = errors.New("kernel appliers need Linux")
)

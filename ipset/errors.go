package ipset

import (
	"errors"
	"strings"
)

// ApplyError is an Apply or Cleanup that failed, shaped like
// [net.OpError]: what was being done, on which set, and the cause, often
// a kernel error mapped to one of the sentinels below, [ErrNotRoot], or
// the error of [Plan.Validate].
type ApplyError struct {
	// Op is the operation: "validate" (the plan was refused before
	// anything was sent), "netns" (the namespace could not be opened),
	// "list", "create", "add", "del", "swap", "destroy" or "cleanup".
	Op string
	// Set is the set concerned; empty means none in particular.
	Set string
	// Entry is the member concerned, in ipset's text form; empty means
	// none in particular.
	Entry string
	// Err is the cause.
	Err error
}

// Error returns the error as text, such as
// `ipset add set KUBE-CLUSTER-IP entry 10.0.0.1,tcp:80: set does not exist`.
func (e *ApplyError) Error() string {
	var b strings.Builder
	b.WriteString("ipset ")
	b.WriteString(e.Op)
	if e.Set != "" {
		b.WriteString(" set ")
		b.WriteString(e.Set)
	}
	if e.Entry != "" {
		b.WriteString(" entry ")
		b.WriteString(e.Entry)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *ApplyError) Unwrap() error { return e.Err }

// Sentinel errors of the appliers, which the kernel's answers are mapped
// to and which a [Fake] returns where the kernel would refuse.
var (
	// ErrNotRoot is returned when the kernel refuses a change or a read
	// for lack of privilege: root, or CAP_NET_ADMIN in the namespace, is
	// needed.
	ErrNotRoot = errors.New("permission denied: changing ipsets needs root (CAP_NET_ADMIN)")
	// ErrNotNetNS is returned when the path or descriptor given with
	// [WithNetNS] or [WithNetNSFd] is not a network namespace.
	ErrNotNetNS = errors.New("not a network namespace")
	// ErrNoSuchSet is returned for a change to a set that does not exist.
	ErrNoSuchSet = errors.New("set does not exist")
	// ErrSetExists is returned for creating a set whose name is taken.
	ErrSetExists = errors.New("set already exists")
	// ErrSetInUse is returned for destroying a set that a rule (or a
	// list:set) still refers to.
	ErrSetInUse = errors.New("set is in use by a kernel component")
	// ErrIncompatible is returned for swapping two sets of different
	// types or families.
	ErrIncompatible = errors.New("sets have different types or families")
	// ErrEntryFamily is returned for a member whose address is of the
	// other family than its set's.
	ErrEntryFamily = errors.New("member of the wrong address family")
	// ErrEntry is returned for a member that does not fit its set's type:
	// a missing or extra part, a port outside a bitmap's range.
	ErrEntry = errors.New("member does not fit the set type")
)

package nftables

import (
	"errors"
	"strconv"
	"strings"
)

// Error is an error of an operation on a plan, naming where it happened.
// It is shaped like [net.OpError]: the operation, the place, and the
// underlying error, which is often one of the sentinels below and can be
// tested with [errors.Is].
type Error struct {
	// Op is the operation, such as "parse", "validate", "render" or
	// "trace".
	Op string
	// Chain is the chain concerned; empty means none in particular.
	Chain string
	// Set is the set or map concerned; empty means none in particular.
	Set string
	// Rule is the 1-based position of the rule in Chain; 0 means none.
	Rule int
	// Element is the 1-based position of the element in Set; 0 means
	// none.
	Element int
	// Err is the underlying error.
	Err error
}

// Error returns the error as text, such as
// `nftables validate chain services rule 2: set "service-ips" does not exist`.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("nftables ")
	b.WriteString(e.Op)
	if e.Chain != "" {
		b.WriteString(" chain ")
		b.WriteString(e.Chain)
	}
	if e.Rule > 0 {
		b.WriteString(" rule ")
		b.WriteString(strconv.Itoa(e.Rule))
	}
	if e.Set != "" {
		b.WriteString(" set ")
		b.WriteString(e.Set)
	}
	if e.Element > 0 {
		b.WriteString(" element ")
		b.WriteString(strconv.Itoa(e.Element))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Sentinel errors, wrapped by [Error] and by the errors ParseRule returns.
var (
	// ErrSyntax is returned for rule text outside the grammar ParseRule
	// reads, and for a malformed plan field.
	ErrSyntax = errors.New("syntax error")
	// ErrName is returned for a table, chain or set name nft refuses.
	ErrName = errors.New("invalid name")
	// ErrUnsafeText is returned for a comment that cannot be written into
	// nft input without changing its meaning.
	ErrUnsafeText = errors.New("text cannot be written safely")
	// ErrDuplicate is returned for a chain, set or element key that
	// appears twice.
	ErrDuplicate = errors.New("duplicate")
	// ErrMissingChain is returned for a jump, goto or map verdict to a
	// chain that does not exist or is a base chain.
	ErrMissingChain = errors.New("chain does not exist")
	// ErrMissingSet is returned for a reference to a set or map that does
	// not exist or has the wrong type.
	ErrMissingSet = errors.New("set does not exist")
	// ErrWrongFamily is returned for an address or data type of the other
	// family than the plan's or the packet's.
	ErrWrongFamily = errors.New("address of the wrong family")
	// ErrHook is returned for a statement the kernel refuses in a chain
	// reached from a base chain of the wrong type or hook, such as dnat
	// from a filter chain.
	ErrHook = errors.New("statement not allowed at this hook")
	// ErrLoop is returned for chains that jump to each other in a cycle,
	// or nest deeper than the tracer follows.
	ErrLoop = errors.New("chain loop")
)

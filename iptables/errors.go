package iptables

import (
	"errors"
	"strconv"
	"strings"
)

// Error is an error of an operation on a plan or on iptables text, naming
// where it happened. It is shaped like [net.OpError]: the operation, the
// place, and the underlying error, which is often one of the sentinels
// below and can be tested with [errors.Is].
type Error struct {
	// Op is the operation, such as "parse", "validate", "trace" or
	// "apply".
	Op string
	// Table is the table concerned; empty means none in particular.
	Table Table
	// Chain is the chain concerned; empty means none in particular.
	Chain string
	// Line is the 1-based line of the text concerned; 0 means none.
	Line int
	// Rule is the 1-based position of the rule in Chain (for a built-in
	// chain, of the jump among the plan's jumps into it); 0 means none.
	Rule int
	// Err is the underlying error.
	Err error
}

// Error returns the error as text, such as
// `iptables parse line 12 nat/KUBE-SVC-X: unknown match "foo"`.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("iptables ")
	b.WriteString(e.Op)
	if e.Line > 0 {
		b.WriteString(" line ")
		b.WriteString(strconv.Itoa(e.Line))
	}
	switch {
	case e.Table != "" && e.Chain != "":
		b.WriteString(" " + string(e.Table) + "/" + e.Chain)
	case e.Table != "":
		b.WriteString(" table " + string(e.Table))
	case e.Chain != "":
		b.WriteString(" chain " + e.Chain)
	}
	if e.Rule > 0 {
		b.WriteString(" rule ")
		b.WriteString(strconv.Itoa(e.Rule))
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
	// ErrSyntax is returned for text that is not iptables-restore input
	// or for a rule argument that is malformed.
	ErrSyntax = errors.New("syntax error")
	// ErrUnbalancedQuote is returned for a rule with an unterminated
	// double quote.
	ErrUnbalancedQuote = errors.New("unbalanced quote")
	// ErrUnknownMatch is returned for a match module (-m) that ParseRule
	// does not understand.
	ErrUnknownMatch = errors.New("unknown match")
	// ErrUnknownOption is returned for an option that ParseRule does not
	// understand in its place.
	ErrUnknownOption = errors.New("unknown option")
	// ErrMissingChain is returned for a rule that uses a chain that does
	// not exist.
	ErrMissingChain = errors.New("chain does not exist")
	// ErrDuplicateChain is returned for a chain declared twice in a table.
	ErrDuplicateChain = errors.New("chain declared twice")
	// ErrDuplicateTable is returned for a table that appears twice.
	ErrDuplicateTable = errors.New("table appears twice")
	// ErrChainName is returned for a chain name the kernel refuses.
	ErrChainName = errors.New("invalid chain name")
	// ErrInvalidTarget is returned for a target that cannot be used where
	// it is, such as DNAT outside the nat table.
	ErrInvalidTarget = errors.New("target not allowed here")
	// ErrWrongFamily is returned for an address of the other family than
	// the plan's or the packet's.
	ErrWrongFamily = errors.New("address of the wrong family")
	// ErrLoop is returned for chains that jump to each other in a cycle, or
	// nest deeper than the tracer follows.
	ErrLoop = errors.New("chain loop")
	// ErrUnsupported is returned by the tracer for a rule it cannot
	// evaluate, such as an ipset match.
	ErrUnsupported = errors.New("not supported")
)

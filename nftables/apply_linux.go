package nftables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	gnft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel applies plans to a Linux kernel's nf_tables over netlink, with
// github.com/google/nftables, in the caller's network namespace or
// another one ([WithNetNS], [WithNetNSFd]); it never runs the nft tool.
// One Kernel serves any number of tables (a plan names its own), and
// remembers the last plan it applied to each. Make one with [New]; it is
// safe for concurrent use.
//
// Each Apply sends at most one batch, which the kernel commits as one
// transaction or not at all. The first batch for a table replaces it:
// add table, delete table, add table, then every set, chain, rule and
// element, as the plan's text does. Later batches send only the
// difference from the plan applied before: new sets and chains; changed
// chains flushed and their rules added again; elements deleted and added;
// and, once nothing refers to them any more, the chains and sets gone
// from the plan, flushed and deleted. Dynamic sets keep the elements
// rules added (ClientIP affinity survives). Applying the same plan again
// sends nothing. A set or base chain whose definition changed, or a
// changed table comment, makes the batch a full one.
//
// Every batch is built on a fresh connection that is only flushed when
// every message was built: google/nftables keeps the messages queued
// before a failed call and would send them, so a connection on which
// anything failed is dropped unsent, and the table keeps what it held. A
// batch the kernel refuses leaves the table as it was too; as the answer
// to a batch may also be lost, the next Apply then replaces the table.
//
// To notice changes made behind its back cheaply, Kernel reads the
// nf_tables ruleset generation, which every committed change in the
// namespace advances, before each batch and after it. While the
// generation is the one it left, Apply trusts what it applied and reads
// nothing else. When it moved, Apply reads the table back: its handle,
// its chains with their rule counts, its sets with their element counts
// (not those of dynamic sets). A flushed or edited chain is flushed and
// refilled, a set whose elements changed is flushed and refilled, and a
// table that was deleted, recreated, or lost or gained a chain or set is
// replaced in full. A rule replaced by another rule, keeping the count,
// goes unnoticed.
//
// Full batches are checked with [Plan.Validate] before anything is sent;
// partial ones, which must stay cheap, have only their new rules parsed,
// and leave references to the kernel, which refuses the whole batch when
// one is wrong.
//
// The kernel's own work dominates the cost of large tables. Binding an
// anonymous set (numgen's map) to its rule walks the whole batch so far,
// so a full batch adds each such rule right after declaring its chain and
// the chains it jumps to, before the bulk of the batch (chains are then
// listed by "nft list" in that order, not the plan's). And every commit
// that adds a rule with a jump, a verdict map element, dnat or
// masquerade re-checks the whole table for loops and hook rules (on
// Linux 6.18, about 250 ms at 10 000 services with 10 endpoints each),
// which bounds a partial batch from below.
//
// Table and chain comments are not written: google/nftables v0.3.0
// cannot send them. Rule, set and element comments are.
type Kernel struct {
	cfg config

	mu     sync.Mutex
	tables map[tableKey]*appliedTable
	stats  Stats
}

// New returns a Kernel working in the namespace the options name,
// checking that it can be opened.
func New(opts ...Option) (*Kernel, error) {
	k := &Kernel{cfg: newConfig(opts), tables: map[tableKey]*appliedTable{}}
	ns, err := k.cfg.openNS()
	if err != nil {
		return nil, err
	}
	ns.close()
	return k, nil
}

// Stats returns what k did so far.
func (k *Kernel) Stats() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stats
}

// Apply makes the table p names hold exactly p, in one batch, as the
// [Kernel] doc describes. Its errors are [*ApplyError] values.
func (k *Kernel) Apply(ctx context.Context, p *Plan) error {
	if p == nil {
		return &ApplyError{Op: "validate", Err: fmt.Errorf("nil plan: %w", ErrSyntax)}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stats.Applies++
	key := keyOf(p)
	ns, err := k.cfg.openNS()
	if err != nil {
		return err
	}
	defer ns.close()
	rd, err := ns.dial()
	if err != nil {
		return &ApplyError{Op: "read", Table: key.table(), Err: err}
	}
	defer rd.Close()
	gen0, err := genID(rd)
	if err != nil {
		return &ApplyError{Op: "read", Table: key.table(), Err: err}
	}
	a := k.tables[key]
	var applied *Plan
	var d *drift
	if a != nil {
		applied = a.plan
		if a.gen != uint64(gen0) {
			if d, err = k.verify(rd, key, a); err != nil {
				return err
			}
			a.gen = uint64(gen0)
		}
	}
	b := plan(applied, p, d)
	if len(b.ops) == 0 {
		return nil
	}
	if b.full {
		if err := p.Validate(); err != nil {
			return &ApplyError{Op: "validate", Table: key.table(), Err: err}
		}
		k.cfg.logger.Info("nftables full batch", "family", key.family, "table", key.name, "why", b.why)
	}
	if err := k.send(ctx, ns, key, p, b); err != nil {
		var ae *ApplyError
		if !errors.As(err, &ae) || ae.Op != "build" {
			// The kernel refused the batch, which leaves the table as it
			// was, or its answer was lost: rewrite the table next time.
			delete(k.tables, key)
		}
		return err
	}
	k.record(rd, key, p, b, gen0)
	return nil
}

// unknownGen is the generation of a table not known to be up to date.
const unknownGen = ^uint64(0)

// verify reads table key back and compares it with what k applied.
func (k *Kernel) verify(rd *netlink.Conn, key tableKey, a *appliedTable) (*drift, error) {
	k.stats.Verifications++
	o, err := observe(rd, key)
	if err != nil {
		return nil, &ApplyError{Op: "read", Table: key.table(), Err: err}
	}
	d := compare(a.plan, o, a.handle)
	if d.found() {
		k.stats.Repairs++
		k.cfg.logger.Info("nftables table changed behind the applier's back", "family", key.family, "table", key.name,
			"full", d.full, "why", d.why, "chains", len(d.refill), "sets", len(d.reset))
	}
	return d, nil
}

// record notes a committed batch: the plan, the table's handle after a
// full batch, and the generation it leaves. When no one else committed
// between the generation read before the batch and the one read after
// it, the tables that were up to date stay so; otherwise they will be
// verified.
func (k *Kernel) record(rd *netlink.Conn, key tableKey, p *Plan, b *batch, gen0 uint32) {
	k.stats.Batches++
	if b.full {
		k.stats.FullBatches++
	} else {
		k.stats.PartialBatches++
	}
	a := &appliedTable{plan: copyPlan(p), gen: unknownGen}
	if old := k.tables[key]; old != nil && !b.full {
		a.handle = old.handle
	}
	if b.full {
		if h, ok, err := tableHandle(rd, key); err == nil && ok {
			a.handle = h
		}
	}
	k.tables[key] = a
	gen1, err := genID(rd)
	if err != nil || gen1 != gen0+1 {
		return
	}
	for _, t := range k.tables {
		if t.gen == uint64(gen0) {
			t.gen = uint64(gen1)
		}
	}
	a.gen = uint64(gen1)
}

// send builds b on a fresh connection and flushes it, or drops the
// connection unsent when building any message failed (an ApplyError with
// Op "build": nothing was sent).
func (k *Kernel) send(ctx context.Context, ns *nsHandle, key tableKey, p *Plan, b *batch) error {
	sizer := &bufSizer{deadline: time.Now().Add(flushTimeout)}
	if dl, ok := ctx.Deadline(); ok {
		sizer.deadline = dl
	}
	conn, err := gnft.New(gnft.WithNetNSFd(ns.fd), gnft.WithSockOptions(sizer.apply))
	if err != nil {
		return &ApplyError{Op: "build", Table: key.table(), Err: err}
	}
	family := gnft.TableFamilyIPv4
	if key.family == IPv6 {
		family = gnft.TableFamilyIPv6
	}
	enc := &encoder{conn: conn, table: &gnft.Table{Name: key.name, Family: family}, family: key.family, ids: map[string]uint32{}}
	for i := range b.ops {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return &ApplyError{Op: "build", Table: key.table(), Err: err}
			}
		}
		if err := enc.op(&b.ops[i]); err != nil {
			e := &ApplyError{Op: "build", Table: key.table(), Err: fmt.Errorf("%s: %w", b.ops[i].kind, err)}
			if c := b.ops[i].chain; c != nil {
				e.Chain = c.Name
			}
			if s := b.ops[i].set; s != nil {
				e.Set = s.Name
			}
			return e
		}
	}
	if err := ctx.Err(); err != nil {
		return &ApplyError{Op: "build", Table: key.table(), Err: err}
	}
	sizer.messages, sizer.bytes = enc.messages, enc.bytes
	k.stats.Messages += enc.messages
	if err := conn.Flush(); err != nil {
		return &ApplyError{Op: "flush", Table: key.table(), Err: privilege(err)}
	}
	return nil
}

// flushTimeout bounds the wait for the kernel's answers to a batch when
// the context has no deadline.
const flushTimeout = 10 * time.Minute

// bufSizer sizes the socket a batch is flushed on: the kernel takes the
// whole batch in one message, which must fit the send buffer, and queues
// an answer to every message (and a copy of every new rule) before the
// first is read, which must fit the receive buffer. Root may exceed the
// system's limits (SO_SNDBUFFORCE, SO_RCVBUFFORCE).
type bufSizer struct {
	messages, bytes int
	deadline        time.Time
}

func (s *bufSizer) apply(c *netlink.Conn) error {
	const maxBuf = 1 << 30
	snd := min(maxBuf, 1<<20+s.bytes+s.messages*64)
	rcv := min(maxBuf, 1<<20+s.messages*2048)
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("sizing the netlink socket's buffers: %w", privilege(serr))
	}
	// Extended acknowledgements name the attribute the kernel refused.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	return c.SetReadDeadline(s.deadline)
}

// op adds the messages of one operation to the batch.
func (enc *encoder) op(o *op) error {
	t := enc.table
	switch o.kind {
	case opAddTable:
		enc.conn.AddTable(t)
	case opDelTable:
		enc.conn.DelTable(t)
	case opAddSet:
		id := enc.newID()
		s, err := kernelSet(t, o.set, id)
		if err != nil {
			return err
		}
		if err := enc.conn.AddSet(s, nil); err != nil {
			return err
		}
		enc.ids[o.set.Name] = id
	case opAddChain:
		c, err := kernelChain(t, o.chain)
		if err != nil {
			return err
		}
		enc.conn.AddChain(c)
	case opFlushChain:
		enc.conn.FlushChain(&gnft.Chain{Table: t, Name: o.chain.Name})
	case opFlushSet:
		enc.conn.FlushSet(&gnft.Set{Table: t, Name: o.set.Name})
	case opAddRules, opInsertRules:
		return enc.rules(o)
	case opAddElems, opDelElems:
		return enc.elements(o)
	case opDelSet:
		enc.conn.DelSet(&gnft.Set{Table: t, Name: o.set.Name})
	case opDelChain:
		enc.conn.DelChain(&gnft.Chain{Table: t, Name: o.chain.Name})
	}
	enc.messages++
	enc.bytes += 256
	return nil
}

// rules appends the rules of o to its chain, or inserts them at its head
// (the last first, so that they keep their order).
func (enc *encoder) rules(o *op) error {
	texts := o.opRules()
	kc := &gnft.Chain{Table: enc.table, Name: o.chain.Name}
	krules := make([]*gnft.Rule, len(texts))
	for i, text := range texts {
		r, err := ParseRule(text)
		if err != nil {
			return err
		}
		if r.Family != "" && r.Family != enc.family {
			return fmt.Errorf("rule %q: %s rule in an %s table: %w", text, r.Family, enc.family, ErrWrongFamily)
		}
		exprs, err := enc.rule(&r)
		if err != nil {
			return fmt.Errorf("rule %q: %w", text, err)
		}
		krules[i] = &gnft.Rule{Table: enc.table, Chain: kc, Exprs: exprs, UserData: ruleComment(r.Comment)}
		enc.bytes += 128 + 64*len(exprs) + len(r.Comment)
	}
	if o.kind == opInsertRules {
		slices.Reverse(krules)
	}
	for _, r := range krules {
		if o.kind == opInsertRules {
			enc.conn.InsertRule(r)
		} else {
			enc.conn.AddRule(r)
		}
		enc.messages++
	}
	return nil
}

// elements adds or deletes elements of a set, in messages that each fit
// the kernel's limits.
func (enc *encoder) elements(o *op) error {
	s, err := kernelSet(enc.table, o.set, enc.ids[o.set.Name])
	if err != nil {
		return err
	}
	for _, chunk := range chunks(o.set, o.elems) {
		elems := make([]gnft.SetElement, len(chunk))
		for i := range chunk {
			if elems[i], err = kernelElement(o.set, &chunk[i]); err != nil {
				return fmt.Errorf("element %s: %w", AppendElement(nil, o.set, &chunk[i]), err)
			}
			if o.kind == opDelElems {
				elems[i].VerdictData, elems[i].Comment = nil, ""
			}
			enc.bytes += elementSize(o.set, &chunk[i])
		}
		if o.kind == opAddElems {
			err = enc.conn.SetAddElements(s, elems)
		} else {
			err = enc.conn.SetDeleteElements(s, elems)
		}
		if err != nil {
			return err
		}
		enc.messages++
		enc.bytes += 256
	}
	return nil
}

// kernelHook returns the kernel's number of a hook.
func kernelHook(h Hook) (*gnft.ChainHook, bool) {
	switch h {
	case HookPrerouting:
		return gnft.ChainHookRef(unix.NF_INET_PRE_ROUTING), true
	case HookInput:
		return gnft.ChainHookRef(unix.NF_INET_LOCAL_IN), true
	case HookForward:
		return gnft.ChainHookRef(unix.NF_INET_FORWARD), true
	case HookOutput:
		return gnft.ChainHookRef(unix.NF_INET_LOCAL_OUT), true
	case HookPostrouting:
		return gnft.ChainHookRef(unix.NF_INET_POST_ROUTING), true
	}
	return nil, false
}

// kernelChain returns the kernel definition of c in table t.
func kernelChain(t *gnft.Table, c *Chain) (*gnft.Chain, error) {
	kc := &gnft.Chain{Table: t, Name: c.Name}
	if b := c.Base; b != nil {
		h, ok := kernelHook(b.Hook)
		if !ok || (b.Type != ChainTypeFilter && b.Type != ChainTypeNAT) {
			return nil, fmt.Errorf("base chain type %q hook %q: %w", b.Type, b.Hook, ErrSyntax)
		}
		kc.Hooknum, kc.Priority, kc.Type = h, gnft.ChainPriorityRef(gnft.ChainPriority(b.Priority)), gnft.ChainType(b.Type)
	}
	return kc, nil
}

// Cleanup deletes, in one batch, the tables named DefaultTableName of
// both families and every other table k applied, of those that exist, and
// forgets what it applied. Other tables are left alone.
func (k *Kernel) Cleanup(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	ns, err := k.cfg.openNS()
	if err != nil {
		return err
	}
	defer ns.close()
	rd, err := ns.dial()
	if err != nil {
		return &ApplyError{Op: "cleanup", Err: err}
	}
	defer rd.Close()
	owned := map[tableKey]bool{{IPv4, DefaultTableName}: true, {IPv6, DefaultTableName}: true}
	for key := range k.tables {
		owned[key] = true
	}
	clear(k.tables)
	conn, err := gnft.New(gnft.WithNetNSFd(ns.fd))
	if err != nil {
		return &ApplyError{Op: "cleanup", Err: err}
	}
	n := 0
	for key := range owned {
		_, ok, err := tableHandle(rd, key)
		if err != nil {
			return &ApplyError{Op: "cleanup", Table: key.table(), Err: err}
		}
		if !ok {
			continue
		}
		family := gnft.TableFamilyIPv4
		if key.family == IPv6 {
			family = gnft.TableFamilyIPv6
		}
		conn.DelTable(&gnft.Table{Name: key.name, Family: family})
		n++
	}
	if n == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return &ApplyError{Op: "cleanup", Err: err}
	}
	k.stats.Batches++
	k.stats.Messages += n
	if err := conn.Flush(); err != nil {
		return &ApplyError{Op: "cleanup", Err: privilege(err)}
	}
	return nil
}

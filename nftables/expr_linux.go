package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// This file turns the typed plan into google/nftables values: rules into
// kernel expressions, sets into set definitions, elements into keys. Each
// expression is encoded the way nft 1.0 encodes the same text, down to
// the registers and the anonymous sets, so that "nft list" prints a table
// written here exactly as one loaded from the plan's text.

// encoder encodes the rules, sets and elements of one table for one
// batch. It owns the batch's set IDs, which tie a rule to an anonymous or
// new set within the batch.
type encoder struct {
	conn   *gnft.Conn
	table  *gnft.Table
	family Family
	// ids are the IDs of the named sets added in this batch.
	ids    map[string]uint32
	nextID uint32
	// messages counts the messages the encoder added to conn, and bytes
	// estimates their size.
	messages, bytes int
}

// The registers nft uses: the verdict register, and NFT_REG_1 (16 bytes,
// overlapping the 4-byte registers 8 to 11).
const (
	regVerdict = 0
	reg1       = 1
)

// The codes of the ICMP and ICMPv6 "port unreachable" errors that
// "reject" sends.
const (
	icmpPortUnreachable   = 3
	icmpv6PortUnreachable = 4
)

// concatReg returns the register of the part of a concatenation that
// starts slot 4-byte words into it, as nft numbers it: a 16-byte register
// where the slot starts one, else a 4-byte register.
func concatReg(slot int) uint32 {
	if slot%4 == 0 {
		return uint32(reg1 + slot/4)
	}
	return uint32(unix.NFT_REG32_00 + slot)
}

// newID returns a set ID unused in the batch.
func (enc *encoder) newID() uint32 {
	enc.nextID++
	return enc.nextID
}

// rule returns the kernel expressions of r, adding to the batch the
// anonymous sets that r's lookups use.
func (enc *encoder) rule(r *Rule) ([]expr.Any, error) {
	out := make([]expr.Any, 0, 4*len(r.Exprs))
	for _, e := range r.Exprs {
		var err error
		out, err = enc.expr(out, e)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (enc *encoder) expr(out []expr.Any, e Expr) ([]expr.Any, error) {
	switch e := e.(type) {
	case CTState:
		return ctState(out, e.State)
	case AddrMatch:
		return enc.addrMatch(out, e)
	case AddrInSet:
		out = append(out, enc.loadAddr(e.Field, reg1))
		return append(out, &expr.Lookup{SourceRegister: reg1, SetName: e.Set, SetID: enc.ids[e.Set]}), nil
	case FibLocal:
		f := &expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagSADDR: e.Field == FieldSAddr, FlagDADDR: e.Field == FieldDAddr}
		return append(out, f, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(unix.RTN_LOCAL)}), nil
	case L4Proto:
		return l4proto(out, e.Proto)
	case DPort:
		out, err := l4proto(out, e.Proto)
		if err != nil {
			return nil, err
		}
		return append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(e.Port)}), nil
	case MarkMatch:
		op := expr.CmpOpEq
		if e.Negate {
			op = expr.CmpOpNeq
		}
		return append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(e.Mask), Xor: native32(0)},
			&expr.Cmp{Op: op, Register: reg1, Data: native32(e.Value)}), nil
	case MarkSet:
		mask := ^e.Value
		if e.Op == MarkXor {
			mask = 0xffffffff
		}
		return append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(mask), Xor: native32(e.Value)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1}), nil
	case VMap:
		return enc.vmap(out, e), nil
	case Numgen:
		return enc.numgen(out, e)
	case SetUpdate:
		out = append(out, enc.loadAddr(e.Field, reg1))
		return append(out, &expr.Dynset{SrcRegKey: reg1, SetName: e.Set, SetID: enc.ids[e.Set], Operation: unix.NFT_DYNSET_OP_UPDATE}), nil
	case DNAT:
		return enc.dnat(out, e)
	case Masquerade:
		return append(out, &expr.Masq{FullyRandom: e.FullyRandom}), nil
	case Reject:
		code := uint8(icmpPortUnreachable)
		if enc.family == IPv6 {
			code = icmpv6PortUnreachable
		}
		return append(out, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: code}), nil
	case Action:
		v, err := kernelVerdict(e)
		if err != nil {
			return nil, err
		}
		return append(out, v), nil
	}
	return nil, fmt.Errorf("expression %T: %w", e, ErrSyntax)
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// ctStateBit returns the bit of a conntrack state.
func ctStateBit(state string) (uint32, bool) {
	switch state {
	case "invalid":
		return expr.CtStateBitINVALID, true
	case "established":
		return expr.CtStateBitESTABLISHED, true
	case "related":
		return expr.CtStateBitRELATED, true
	case "new":
		return expr.CtStateBitNEW, true
	case "untracked":
		return expr.CtStateBitUNTRACKED, true
	}
	return 0, false
}

func ctState(out []expr.Any, state string) ([]expr.Any, error) {
	bit, ok := ctStateBit(state)
	if !ok {
		return nil, fmt.Errorf("conntrack state %q: %w", state, ErrSyntax)
	}
	return append(out,
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(bit), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)}), nil
}

// protoNumber returns the IP protocol number of p.
func protoNumber(p Protocol) (byte, error) {
	switch p {
	case ProtocolTCP:
		return unix.IPPROTO_TCP, nil
	case ProtocolUDP:
		return unix.IPPROTO_UDP, nil
	case ProtocolSCTP:
		return unix.IPPROTO_SCTP, nil
	}
	return 0, fmt.Errorf("protocol %q: %w", p, ErrSyntax)
}

func l4proto(out []expr.Any, p Protocol) ([]expr.Any, error) {
	n, err := protoNumber(p)
	if err != nil {
		return nil, err
	}
	return append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{n}}), nil
}

// addrField returns the offset and length of an address field in the
// network header of family f.
func addrField(f Family, field AddrField) (offset, size uint32) {
	switch {
	case f == IPv6 && field == FieldSAddr:
		return 8, 16
	case f == IPv6:
		return 24, 16
	case field == FieldSAddr:
		return 12, 4
	}
	return 16, 4
}

func (enc *encoder) loadAddr(field AddrField, reg uint32) *expr.Payload {
	off, size := addrField(enc.family, field)
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size}
}

// addrMatch encodes an address comparison as nft does: one prefix by a
// payload load of its whole bytes (the full address and a mask when its
// length is not a multiple of 8) and a compare, more by a lookup in an
// anonymous interval set.
func (enc *encoder) addrMatch(out []expr.Any, e AddrMatch) ([]expr.Any, error) {
	if len(e.Prefixes) == 0 {
		return nil, fmt.Errorf("address match without an address: %w", ErrSyntax)
	}
	op := expr.CmpOpEq
	if e.Negate {
		op = expr.CmpOpNeq
	}
	if len(e.Prefixes) == 1 {
		p := e.Prefixes[0].Masked()
		if familyOf(p.Addr()) != enc.family {
			return nil, fmt.Errorf("address %s: %w", p, ErrWrongFamily)
		}
		off, size := addrField(enc.family, e.Field)
		addr := p.Addr().AsSlice()
		if bits := p.Bits(); bits > 0 && bits%8 == 0 {
			return append(out,
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(bits / 8)},
				&expr.Cmp{Op: op, Register: reg1, Data: addr[:bits/8]}), nil
		}
		mask := make([]byte, size)
		for i := range mask {
			switch bit := i * 8; {
			case bit+8 <= p.Bits():
				mask[i] = 0xff
			case bit < p.Bits():
				mask[i] = byte(0xff << (8 - (p.Bits() - bit)))
			}
		}
		return append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: size, Mask: mask, Xor: make([]byte, size)},
			&expr.Cmp{Op: op, Register: reg1, Data: addr}), nil
	}
	elems, err := intervalElements(enc.family, e.Prefixes)
	if err != nil {
		return nil, err
	}
	keyType := gnft.TypeIPAddr
	if enc.family == IPv6 {
		keyType = gnft.TypeIP6Addr
	}
	s := &gnft.Set{Table: enc.table, ID: enc.newID(), Name: "__set%d", Anonymous: true, Constant: true, Interval: true, KeyType: keyType}
	if err := enc.conn.AddSet(s, elems); err != nil {
		return nil, fmt.Errorf("anonymous set: %w", err)
	}
	enc.messages += 2
	out = append(out, enc.loadAddr(e.Field, reg1))
	return append(out, &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: e.Negate}), nil
}

// intervalElements returns the elements of an anonymous interval set
// holding prefixes, as nft sends them: the prefixes sorted and merged into
// ranges, each a start element and an end element one past its last
// address (none for a range reaching the top of the address space), and
// first an end element at address zero unless a range starts there.
func intervalElements(f Family, prefixes []netip.Prefix) ([]gnft.SetElement, error) {
	type span struct{ lo, hi netip.Addr }
	spans := make([]span, 0, len(prefixes))
	for _, p := range prefixes {
		if familyOf(p.Addr()) != f {
			return nil, fmt.Errorf("address %s: %w", p, ErrWrongFamily)
		}
		spans = append(spans, span{p.Masked().Addr(), lastAddr(p.Masked())})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Compare(b.lo) })
	merged := spans[:1]
	for _, s := range spans[1:] {
		last := &merged[len(merged)-1]
		if next := last.hi.Next(); next.IsValid() && s.lo.Compare(next) > 0 {
			merged = append(merged, s)
			continue
		}
		if s.hi.Compare(last.hi) > 0 {
			last.hi = s.hi
		}
	}
	var out []gnft.SetElement
	if !merged[0].lo.IsUnspecified() {
		out = append(out, gnft.SetElement{Key: make([]byte, merged[0].lo.BitLen()/8), IntervalEnd: true})
	}
	for _, s := range merged {
		out = append(out, gnft.SetElement{Key: s.lo.AsSlice()})
		if next := s.hi.Next(); next.IsValid() {
			out = append(out, gnft.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out, nil
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		if bit := i * 8; bit+8 <= p.Bits() {
			continue
		} else if bit >= p.Bits() {
			b[i] = 0xff
		} else {
			b[i] |= 0xff >> (p.Bits() - bit)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// vmap loads the key parts into consecutive registers and looks them up
// in a named verdict map.
func (enc *encoder) vmap(out []expr.Any, e VMap) []expr.Any {
	slot := 0
	for _, k := range e.Key {
		reg := concatReg(slot)
		switch k {
		case KeyDAddr:
			p := enc.loadAddr(FieldDAddr, reg)
			out = append(out, p)
			slot += int(p.Len) / 4
		case KeyL4Proto:
			out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg})
			slot++
		default:
			out = append(out, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			slot++
		}
	}
	return append(out, &expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: e.Map, SetID: enc.ids[e.Map]})
}

// numgen encodes "numgen random mod N vmap { ... }": a random number and
// a lookup in an anonymous verdict map keyed by it. nft keys that map in
// host byte order and says so in the set's user data; google/nftables
// marks every anonymous set big-endian, which would make nft list the
// keys 0, 16777216, ... So the number is turned to network byte order
// first (a byteorder expression, which nft does not show) and the keys
// are big-endian: the same choice, listed as nft lists its own.
func (enc *encoder) numgen(out []expr.Any, e Numgen) ([]expr.Any, error) {
	elems := make([]gnft.SetElement, len(e.Actions))
	for i, a := range e.Actions {
		v, err := kernelVerdict(a)
		if err != nil {
			return nil, err
		}
		elems[i] = gnft.SetElement{Key: binaryutil.BigEndian.PutUint32(uint32(i)), VerdictData: v}
	}
	s := &gnft.Set{Table: enc.table, ID: enc.newID(), Name: "__map%d", Anonymous: true, Constant: true, IsMap: true,
		KeyType: gnft.TypeInteger, DataType: gnft.TypeVerdict}
	if err := enc.conn.AddSet(s, elems); err != nil {
		return nil, fmt.Errorf("anonymous map: %w", err)
	}
	enc.messages += 2
	return append(out,
		&expr.Numgen{Register: reg1, Modulus: uint32(len(e.Actions)), Type: unix.NFT_NG_RANDOM},
		&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: s.Name, SetID: s.ID}), nil
}

func (enc *encoder) dnat(out []expr.Any, e DNAT) ([]expr.Any, error) {
	a := e.To.Addr()
	if familyOf(a) != enc.family {
		return nil, fmt.Errorf("dnat to %s: %w", e.To, ErrWrongFamily)
	}
	nfproto := uint32(unix.NFPROTO_IPV4)
	if enc.family == IPv6 {
		nfproto = unix.NFPROTO_IPV6
	}
	return append(out,
		&expr.Immediate{Register: 1, Data: a.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(e.To.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfproto, RegAddrMin: 1, RegProtoMin: 2, Specified: true}), nil
}

// kernelVerdict returns the kernel verdict of a.
func kernelVerdict(a Action) (*expr.Verdict, error) {
	var k expr.VerdictKind
	switch a.Kind {
	case ActionAccept:
		k = expr.VerdictAccept
	case ActionDrop:
		k = expr.VerdictDrop
	case ActionReturn:
		k = expr.VerdictReturn
	case ActionJump:
		k = expr.VerdictJump
	case ActionGoto:
		k = expr.VerdictGoto
	default:
		return nil, fmt.Errorf("verdict %q: %w", a, ErrSyntax)
	}
	if (a.Chain != "") != (a.Kind == ActionJump || a.Kind == ActionGoto) {
		return nil, fmt.Errorf("verdict %q: %w", a, ErrSyntax)
	}
	return &expr.Verdict{Kind: k, Chain: a.Chain}, nil
}

// ruleComment returns the user data nft stores a rule comment in.
func ruleComment(c string) []byte {
	if c == "" {
		return nil
	}
	return userdata.AppendString(nil, userdata.TypeComment, c)
}

// kernelType returns the kernel's data type of a key part.
func kernelType(k DataType) (gnft.SetDatatype, bool) {
	switch k {
	case TypeIPv4Addr:
		return gnft.TypeIPAddr, true
	case TypeIPv6Addr:
		return gnft.TypeIP6Addr, true
	case TypeInetProto:
		return gnft.TypeInetProto, true
	case TypeInetService:
		return gnft.TypeInetService, true
	}
	return gnft.SetDatatype{}, false
}

// kernelSet returns the kernel definition of s in table t, with set ID
// id (0 for a set not added in this batch).
func kernelSet(t *gnft.Table, s *Set, id uint32) (*gnft.Set, error) {
	types := make([]gnft.SetDatatype, len(s.Key))
	for i, k := range s.Key {
		dt, ok := kernelType(k)
		if !ok {
			return nil, fmt.Errorf("key type %q: %w", k, ErrSyntax)
		}
		types[i] = dt
	}
	key := types[0]
	if len(types) > 1 {
		var err error
		if key, err = gnft.ConcatSetType(types...); err != nil {
			return nil, fmt.Errorf("key %v: %w", s.Key, err)
		}
	}
	ks := &gnft.Set{Table: t, ID: id, Name: s.Name, KeyType: key, KeyByteOrder: binaryutil.BigEndian,
		IsMap: s.IsMap(), HasTimeout: s.HasFlag(SetFlagTimeout), Timeout: s.Timeout,
		Dynamic: s.HasFlag(SetFlagDynamic), Comment: s.Comment}
	if s.IsMap() {
		ks.DataType = gnft.TypeVerdict
	}
	return ks, nil
}

// elementKey returns the key of e in set s as the kernel stores it: each
// part in network byte order, padded to 4 bytes in a concatenation.
func elementKey(s *Set, e *Element) ([]byte, error) {
	var key []byte
	concat := len(s.Key) > 1
	for _, k := range s.Key {
		start := len(key)
		switch k {
		case TypeIPv4Addr, TypeIPv6Addr:
			if !e.Addr.IsValid() || (k == TypeIPv4Addr) != e.Addr.Is4() {
				return nil, fmt.Errorf("address %s for key %s: %w", e.Addr, k, ErrWrongFamily)
			}
			key = append(key, e.Addr.AsSlice()...)
		case TypeInetProto:
			n, err := protoNumber(e.Proto)
			if err != nil {
				return nil, err
			}
			key = append(key, n)
		case TypeInetService:
			key = binary.BigEndian.AppendUint16(key, e.Port)
		default:
			return nil, fmt.Errorf("key type %q: %w", k, ErrSyntax)
		}
		for concat && (len(key)-start)%4 != 0 {
			key = append(key, 0)
		}
	}
	return key, nil
}

// kernelElement returns e as an element of s.
func kernelElement(s *Set, e *Element) (gnft.SetElement, error) {
	key, err := elementKey(s, e)
	if err != nil {
		return gnft.SetElement{}, err
	}
	ke := gnft.SetElement{Key: key, Comment: e.Comment}
	if s.IsMap() {
		if ke.VerdictData, err = kernelVerdict(e.Action); err != nil {
			return gnft.SetElement{}, err
		}
	}
	return ke, nil
}

// elementSize estimates the bytes e takes in a netlink element list.
func elementSize(s *Set, e *Element) int {
	n := 4 + 8 + 16 + 16 // item, key attributes, key
	if s.IsMap() {
		n += 32 + len(e.Action.Chain)
	}
	if e.Comment != "" {
		n += 12 + len(e.Comment)
	}
	return n
}

// maxElementBytes bounds the element list of one message, which the
// kernel reads as one netlink attribute of at most 64 KiB.
const maxElementBytes = 48 << 10

// chunks cuts elems into runs that each fit one message.
func chunks(s *Set, elems []Element) [][]Element {
	var out [][]Element
	start, size := 0, 0
	for i := range elems {
		n := elementSize(s, &elems[i])
		if i > start && (i-start >= MaxElementsPerMessage || size+n > maxElementBytes) {
			out = append(out, elems[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(elems) {
		out = append(out, elems[start:])
	}
	return out
}

package iptables

// chainNameBytesOK reports whether every byte of name may appear in a
// chain name: printable ASCII other than space, '"', '\\' and '!'. It
// tests eight bytes at a time, as a compiler's plans carry some hundred
// thousand chain names that are checked when made and again when
// rendered.
func chainNameBytesOK(name string) bool {
	for ; len(name) >= 8; name = name[8:] {
		if !chainNameWordOK(load8(name)) {
			return false
		}
	}
	if name == "" {
		return true
	}
	v := uint64('A' * ones8) // padding that passes
	for i := 0; i < len(name); i++ {
		v = v&^(0xff<<(8*i)) | uint64(name[i])<<(8*i)
	}
	return chainNameWordOK(v)
}

// The bytes 0x01 and 0x80 repeated in a word.
const (
	ones8 = 0x0101010101010101
	high8 = 0x8080808080808080
)

// load8 returns the first eight bytes of s as a little-endian word.
func load8(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// chainNameWordOK reports whether each byte of v is one chainNameBytesOK
// allows. With every byte below 0x80, adding a per-byte constant never
// carries into the next byte, so the high bit of each byte of
// v+(0x80-lo) tells byte >= lo and that of v+(0x7f-hi) tells byte > hi.
func chainNameWordOK(v uint64) bool {
	if v&high8 != 0 {
		return false
	}
	// '#' (0x23) to '~' (0x7e) leaves out controls, space, '!' and '"'.
	printable := (v + (0x80-'#')*ones8) &^ (v + (0x7f-'~')*ones8)
	notBackslash := (v ^ '\\'*ones8) + 0x7f*ones8
	return printable&notBackslash&high8 == high8
}

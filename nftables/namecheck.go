package nftables

// nameBytesOK reports whether every byte of name may appear in a name:
// letters, digits, '_', '.', '/' and '-'. It tests eight bytes at a time,
// as a compiler's plans carry some hundred thousand names that are
// checked when made and again when rendered.
func nameBytesOK(name string) bool {
	for ; len(name) >= 8; name = name[8:] {
		if !nameWordOK(load8(name)) {
			return false
		}
	}
	if name == "" {
		return true
	}
	v := uint64('a' * ones8) // padding that passes
	for i := 0; i < len(name); i++ {
		v = v&^(0xff<<(8*i)) | uint64(name[i])<<(8*i)
	}
	return nameWordOK(v)
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

// nameWordOK reports whether each byte of v is one nameBytesOK allows.
// With every byte below 0x80, adding a per-byte constant never carries
// into the next byte, so the high bit of each byte of v+(0x80-lo) tells
// byte >= lo and that of v+(0x7f-hi) tells byte > hi.
func nameWordOK(v uint64) bool {
	if v&high8 != 0 {
		return false
	}
	lower := v | 0x20*ones8 // letters to lower case; other bytes stay below 0x80
	letters := (lower + (0x80-'a')*ones8) &^ (lower + (0x7f-'z')*ones8)
	digits := (v + (0x80-'-')*ones8) &^ (v + (0x7f-'9')*ones8) // '-', '.', '/', 0-9
	underscore := ^((v ^ '_'*ones8) + 0x7f*ones8)
	return (letters|digits|underscore)&high8 == high8
}

package nftables

import (
	"strings"
	"testing"
)

// TestNameBytesOK holds the word-at-a-time check to a byte-by-byte
// reading of the rule, for every byte value at every position of names
// of 1 to 20 bytes.
func TestNameBytesOK(t *testing.T) {
	allowed := func(c byte) bool {
		return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_./-", c) >= 0
	}
	const fill = "aZ09_./-q"
	for n := 1; n <= 20; n++ {
		for pos := range n {
			for c := range 256 {
				b := make([]byte, n)
				for k := range b {
					b[k] = fill[k%len(fill)]
				}
				b[pos] = byte(c)
				if got, want := nameBytesOK(string(b)), allowed(byte(c)); got != want {
					t.Fatalf("nameBytesOK(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}

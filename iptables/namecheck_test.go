package iptables

import "testing"

// TestChainNameBytesOK holds the word-at-a-time check to a byte-by-byte
// reading of the rule, for every byte value at every position of names
// of 1 to 20 bytes.
func TestChainNameBytesOK(t *testing.T) {
	allowed := func(c byte) bool { return '!' < c && c <= '~' && c != '"' && c != '\\' }
	const fill = "KUBE-SEP-#~az09"
	for n := 1; n <= 20; n++ {
		for pos := range n {
			for c := range 256 {
				b := make([]byte, n)
				for k := range b {
					b[k] = fill[k%len(fill)]
				}
				b[pos] = byte(c)
				if got, want := chainNameBytesOK(string(b)), allowed(byte(c)); got != want {
					t.Fatalf("chainNameBytesOK(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}

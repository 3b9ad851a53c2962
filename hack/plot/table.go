package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Table returns the markdown table of figs: one row per cluster size, the
// modes side by side, and under it, per mode, the ratio of its largest
// size's latency to its smallest's.
func Table(figs []Figure) string {
	var modes []string
	var sizes []int
	at := map[string]map[int]Figure{}
	for _, f := range figs {
		if at[f.Mode] == nil {
			at[f.Mode] = map[int]Figure{}
			modes = append(modes, f.Mode)
		}
		at[f.Mode][f.Services] = f
		if !slices.Contains(sizes, f.Services) {
			sizes = append(sizes, f.Services)
		}
	}
	slices.Sort(sizes)
	var b strings.Builder
	b.WriteString("| services |")
	for _, m := range modes {
		fmt.Fprintf(&b, " %s p50 | %[1]s p99 | %[1]s mean | %[1]s apply |", m)
	}
	b.WriteString("\n|---:|")
	b.WriteString(strings.Repeat("---:|---:|---:|---:|", len(modes)))
	b.WriteByte('\n')
	for _, n := range sizes {
		fmt.Fprintf(&b, "| %s |", groupDigits(n))
		for _, m := range modes {
			f, ok := at[m][n]
			if !ok {
				b.WriteString(" | | | |")
				continue
			}
			fmt.Fprintf(&b, " %s | %s | %s | %s |", micro(f.P50), micro(f.P99), micro(f.Mean), seconds(f.ApplySeconds))
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	for _, m := range modes {
		first, last := at[m][sizes[0]], at[m][sizes[len(sizes)-1]]
		if first.Services == last.Services || first.Services == 0 || last.Services == 0 {
			continue
		}
		fmt.Fprintf(&b, "- %s at %s services against %s: p50 %.2f×, mean %.2f×, p99 %.2f×.\n", m,
			groupDigits(last.Services), groupDigits(first.Services),
			last.P50/first.P50, last.Mean/first.Mean, last.P99/first.P99)
	}
	f := figs[0]
	fmt.Fprintf(&b, "\nEach figure is the median of %d run(s) of %d connections each.\n", f.Runs, f.Samples)
	return b.String()
}

// micro formats microseconds.
func micro(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + " ms"
	}
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64) + " µs"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " µs"
}

// seconds formats an apply time.
func seconds(v float64) string {
	if v < 1 {
		return strconv.FormatFloat(v*1000, 'f', 0, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " s"
}

// groupDigits writes n with a thin space between groups of three digits,
// as the other tables do ("10 000").
func groupDigits(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}

// ReplaceRegion returns text with the lines between "<!-- BEGIN name -->"
// and "<!-- END name -->" replaced by body, or an error when the markers
// are missing or out of order.
func ReplaceRegion(text, name, body string) (string, error) {
	begin, end := "<!-- BEGIN "+name+" -->\n", "<!-- END "+name+" -->"
	i := strings.Index(text, begin)
	j := strings.Index(text, end)
	if i < 0 || j < i+len(begin) {
		return "", fmt.Errorf("document has no region %q (lines %q and %q, in that order)", name, strings.TrimSpace(begin), end)
	}
	if body != "" && !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	return text[:i+len(begin)] + body + text[j:], nil
}

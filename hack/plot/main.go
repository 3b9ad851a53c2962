// Command plot turns the output of the datapath benchmark
// (BenchmarkFirstPacket in internal/datapath) into the figures of
// docs/BENCHMARKS.md: a CSV file of the numbers, a PNG bar chart of the
// first-packet latency per mode and cluster size, and the markdown table,
// which it writes between the "<!-- BEGIN datapath-table -->" and
// "<!-- END datapath-table -->" lines of the document. Other marked
// regions of the document can be filled from files with -region.
//
// hack/bench-datapath.sh runs it:
//
//	go run ./hack/plot -in bench.txt -csv docs/benchmarks-datapath.csv \
//		-png docs/benchmarks-datapath.png -doc docs/BENCHMARKS.md -region machine=machine.md
//
// When one benchmark ran several times (-count), each figure is the
// median of its runs.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// regionFlags collects -region NAME=FILE flags.
type regionFlags map[string]string

func (r regionFlags) String() string { return fmt.Sprint(map[string]string(r)) }

func (r regionFlags) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok || name == "" || file == "" {
		return fmt.Errorf("region %q: want NAME=FILE", v)
	}
	r[name] = file
	return nil
}

// run parses args, reads the benchmark output and writes what the flags
// ask for.
func run(args []string, stdin io.Reader) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	in := fs.String("in", "-", "benchmark output to read (- for standard input)")
	csvPath := fs.String("csv", "", "CSV file to write")
	pngPath := fs.String("png", "", "PNG file to write")
	docPath := fs.String("doc", "", "markdown document whose marked regions to rewrite")
	regions := regionFlags{}
	fs.Var(regions, "region", "NAME=FILE: put FILE's text in the document's region NAME (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var r io.Reader = stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return fmt.Errorf("read benchmark output: %w", err)
		}
		defer f.Close()
		r = f
	}
	results, err := Parse(r)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return errors.New("no BenchmarkFirstPacket results in the input")
	}
	figs := Aggregate(results)
	if *csvPath != "" {
		var b bytes.Buffer
		WriteCSV(&b, results)
		if err := os.WriteFile(*csvPath, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write CSV: %w", err)
		}
	}
	if *pngPath != "" {
		var b bytes.Buffer
		if err := Draw(&b, figs); err != nil {
			return err
		}
		if err := os.WriteFile(*pngPath, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write PNG: %w", err)
		}
	}
	if *docPath != "" {
		return rewriteDoc(*docPath, figs, regions)
	}
	return nil
}

// rewriteDoc fills the datapath table and the named regions of the
// document at path.
func rewriteDoc(path string, figs []Figure, regions regionFlags) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read document: %w", err)
	}
	text := string(doc)
	if text, err = ReplaceRegion(text, "datapath-table", Table(figs)); err != nil {
		return err
	}
	for name, file := range regions {
		body, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("region %s: %w", name, err)
		}
		if text, err = ReplaceRegion(text, name, string(body)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write document: %w", err)
	}
	return nil
}

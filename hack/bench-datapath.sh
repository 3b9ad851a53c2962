#!/usr/bin/env bash
# hack/bench-datapath.sh measures what docs/BENCHMARKS.md reports and
# rewrites its generated parts:
#
#   - the datapath benchmark (internal/datapath BenchmarkFirstPacket):
#     first-packet latency of new TCP connections to the last of 10, 1 000
#     and 10 000 services, nftables and iptables modes, in network
#     namespaces of its own; numbers to docs/benchmarks-datapath.csv, plot
#     to docs/benchmarks-datapath.png, table into docs/BENCHMARKS.md;
#   - the compile benchmarks of ./translate (iptables and nftables, 1 000
#     and 10 000 services);
#   - the nftables partial apply after one endpoint change at 10 000
#     services (BenchmarkApplyPartial in ./nftables; PARTIAL=0 skips it,
#     it spends about 80 s applying the table first);
#   - the machine it ran on.
#
# It needs root (namespaces, nft, iptables). It never touches the host's
# own network namespace, and checks that the host's ruleset is the same
# afterwards. About 2-5 minutes on 2 cores.
#
# Environment: SAMPLES (connections per figure, default 3000), COUNT (sets
# of samples per figure, medians reported; default 1), SVCPLAN_BENCH_SIZES
# (default 10,1000,10000), PARTIAL (1), COMPILE (1); a step turned off
# leaves its part of the document as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "bench-datapath: needs root (it builds network namespaces)" >&2
	exit 1
fi
samples=${SAMPLES:-3000}
count=${COUNT:-1}
sizes=${SVCPLAN_BENCH_SIZES:-10,1000,10000}
doc=docs/BENCHMARKS.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

host_rules() { nft list ruleset 2>&1; iptables-save 2>&1 | grep -v '^#' || true; }
host_rules >"$tmp/host-before"

echo "== datapath: $sizes services, $samples connections, $count run(s)" >&2
SVCPLAN_BENCH=1 SVCPLAN_BENCH_SIZES="$sizes" timeout 1200 \
	go test -run '^$' -bench FirstPacket -benchtime "${samples}x" -count "$count" -timeout 20m \
	./internal/datapath/ | tee "$tmp/datapath.txt"

# The regions of docs/BENCHMARKS.md to rewrite besides the datapath ones;
# a step skipped leaves its region as it was.
regions=()

# A region gets the command and its output as a code block.
region() { # file command...
	local out=$1
	shift
	{
		echo '```'
		printf '$'
		local a
		for a in "$@"; do
			case $a in
			*[!A-Za-z0-9_./=:-]*) printf " '%s'" "$a" ;;
			*) printf ' %s' "$a" ;;
			esac
		done
		echo
		grep -E '^(Benchmark|goos|goarch|cpu|ok|PASS|FAIL)' "$tmp/run.txt" || true
		echo '```'
	} >"$out"
}

if [ "${COMPILE:-1}" = 1 ]; then
	echo "== compile" >&2
	cmd=(go test -run '^$' -bench 'Compile(IPTables|NFTables)/services=' -benchmem -benchtime 5x ./translate/)
	timeout 600 "${cmd[@]}" | tee "$tmp/run.txt"
	region "$tmp/compile.md" "${cmd[@]}"
	regions+=(-region compile="$tmp/compile.md")
fi

if [ "${PARTIAL:-1}" = 1 ]; then
	echo "== nftables partial apply" >&2
	cmd=(go test -run '^$' -bench 'ApplyPartial' -benchtime 10x -timeout 20m ./nftables/)
	SVCPLAN_BENCH=1 timeout 1200 "${cmd[@]}" | tee "$tmp/run.txt"
	region "$tmp/partial.md" SVCPLAN_BENCH=1 "${cmd[@]}"
	regions+=(-region partial="$tmp/partial.md")
fi

{
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- kernel: $(uname -sr), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
	echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- $(go version | cut -d' ' -f3-), $(nft --version), $(iptables --version)"
	echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
} >"$tmp/machine.md"

{
	echo '```'
	grep -E '^Benchmark' "$tmp/datapath.txt"
	echo '```'
} >"$tmp/raw.md"

go run ./hack/plot -in "$tmp/datapath.txt" \
	-csv docs/benchmarks-datapath.csv -png docs/benchmarks-datapath.png -doc "$doc" \
	-region machine="$tmp/machine.md" -region datapath-raw="$tmp/raw.md" "${regions[@]}"

host_rules >"$tmp/host-after"
if ! cmp -s "$tmp/host-before" "$tmp/host-after"; then
	echo "bench-datapath: the host's own ruleset changed during the run:" >&2
	diff "$tmp/host-before" "$tmp/host-after" >&2 || true
	exit 1
fi
echo "bench-datapath: wrote docs/benchmarks-datapath.{csv,png} and the tables of $doc" >&2

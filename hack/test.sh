#!/usr/bin/env bash
# hack/test.sh runs every test tier of svcplan: formatting, vet, the pure
# tests, and (as root) the kernel tests in network namespaces, with the
# tools they need installed first. It is the README's test command and what
# .ci/run calls.
#
# Environment:
#   SVCPLAN_REQUIRE_KERNEL  set to 1 when root: kernel tests fail instead of skipping
#   SVCPLAN_REQUIRE_VM      set to 1 when root: VM tests fail instead of skipping
#   SVCPLAN_TEST_FLAGS      extra flags for go test (e.g. -run, -count)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# install_tools installs the Debian packages the kernel tiers use, when
# something is missing and we may install.
install_tools() {
	local need=()
	command -v ip >/dev/null || need+=(iproute2)
	command -v iptables-legacy-restore >/dev/null || need+=(iptables)
	command -v iptables-nft-restore >/dev/null || need+=(iptables)
	command -v nft >/dev/null || need+=(nftables)
	command -v ipset >/dev/null || need+=(ipset)
	command -v conntrack >/dev/null || need+=(conntrack)
	command -v strace >/dev/null || need+=(strace)
	if [ ${#need[@]} -eq 0 ]; then
		return 0
	fi
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "${need[@]}" >/tmp/svcplan-apt.log 2>&1; then
		apt-get update >>/tmp/svcplan-apt.log 2>&1
		apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/svcplan-apt.log 2>&1 || {
			cat /tmp/svcplan-apt.log
			return 1
		}
	fi
}

if [ "$(id -u)" -eq 0 ]; then
	install_tools
	# The VM tier (internal/vmtest) boots a Debian cloud kernel in qemu; its
	# kernel and base initramfs are cached between runs in
	# ${SVCPLAN_VM_CACHE:-/var/cache/svcplan-vm}.
	log "preparing VM assets"
	hack/vm-assets.sh
	export SVCPLAN_REQUIRE_KERNEL="${SVCPLAN_REQUIRE_KERNEL:-1}"
	export SVCPLAN_REQUIRE_VM="${SVCPLAN_REQUIRE_VM:-1}"
else
	log "not root: kernel and VM tests will skip"
fi

log "gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "these files need gofmt:"
	echo "$unformatted"
	exit 1
fi

log "go vet"
go vet ./...

log "go test -race"
# The VM tests run whole test binaries under software emulation, so the
# per-binary timeout is longer than go test's 10 minutes.
# shellcheck disable=SC2086
go test -race -count=1 -timeout 45m ${SVCPLAN_TEST_FLAGS:-} ./...

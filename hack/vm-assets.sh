#!/usr/bin/env bash
# hack/vm-assets.sh prepares what internal/vmtest boots: a Debian cloud
# kernel (vmlinuz) and a base initramfs (initramfs.cpio) holding busybox,
# the kernel modules the proxy modes need (IPVS, netfilter, ipset, dummy,
# veth), the networking tools (ip, iptables nft and legacy, ipset, ipvsadm,
# nft, conntrack) with their shared libraries, and an /init that loads the
# modules, runs the test program a second archive appends, prints an end
# marker and powers off.
#
# It runs as root, installs the Debian packages it needs, and is idempotent:
# the result is cached in $SVCPLAN_VM_CACHE (default /var/cache/svcplan-vm)
# and rebuilt only when this script or the kernel version changes.
#
# Usage: hack/vm-assets.sh [--force]
set -euo pipefail

CACHE="${SVCPLAN_VM_CACHE:-/var/cache/svcplan-vm}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf 'vm-assets: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, makes device nodes)"

# MODULES are the modules loaded at boot, by name; their dependencies are
# added and everything is loaded in dependency order. Other modules of the
# netfilter directories are shipped too, for the kernel to load on demand
# through modprobe.
MODULES=(
	# IPVS and its schedulers.
	ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh
	ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh
	# Connection tracking and NAT.
	libcrc32c nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack nf_nat nfnetlink
	nf_conntrack_netlink
	# nf_tables and the expressions kube-proxy's nftables mode uses.
	nf_tables nft_ct nft_nat nft_compat nft_chain_nat nft_masq nft_redir
	nft_reject nft_reject_inet nft_reject_ipv4 nft_reject_ipv6 nft_numgen
	nft_limit nft_fib nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_hash
	nft_quota nft_objref nft_log nft_socket
	# x_tables matches and targets of kube-proxy's iptables and IPVS rules.
	x_tables xt_comment xt_mark xt_conntrack xt_addrtype xt_statistic
	xt_recent xt_set xt_MASQUERADE xt_REDIRECT xt_multiport xt_nat xt_tcpudp
	xt_state xt_CT xt_limit xt_LOG xt_connmark xt_ipvs xt_CHECKSUM xt_physdev
	# Legacy iptables tables and REJECT.
	ip_tables iptable_nat iptable_filter iptable_mangle iptable_raw
	ip6_tables ip6table_nat ip6table_filter ip6table_mangle ip6table_raw
	nf_reject_ipv4 nf_reject_ipv6 ipt_REJECT ip6t_REJECT nf_log_syslog
	# ipset and the set types kube-proxy's IPVS mode uses.
	ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip
	ip_set_hash_ipportnet ip_set_hash_net ip_set_hash_netport
	ip_set_hash_netiface ip_set_bitmap_port ip_set_bitmap_ip ip_set_list_set
	# Links.
	dummy veth bridge br_netfilter
)

# ON_DEMAND are module directories shipped whole, for on-demand loading.
ON_DEMAND=(kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter kernel/net/bridge kernel/net/sched)

# TOOLS are the programs copied from the host, with their shared libraries.
TOOLS=(
	/usr/bin/ip
	/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi
	/usr/sbin/ipset /usr/sbin/ipvsadm /usr/sbin/nft /usr/sbin/conntrack
)

PACKAGES=(qemu-system-x86 busybox-static cpio iproute2 iptables ipset ipvsadm nftables conntrack)

install_packages() {
	local need=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "${need[@]}" >/tmp/svcplan-vm-apt.log 2>&1; then
		apt-get update >>/tmp/svcplan-vm-apt.log 2>&1
		apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/svcplan-vm-apt.log 2>&1 || {
			cat /tmp/svcplan-vm-apt.log >&2
			die "apt-get install failed"
		}
	fi
}

# kernel_package prints the name of the image package linux-image-cloud-amd64
# depends on (linux-image-VERSION-cloud-amd64).
kernel_package() {
	local pkg
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
	if [ -z "$pkg" ]; then
		apt-get update >/dev/null 2>&1 || true
		pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
	fi
	[ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 (apt-cache depends)"
	echo "$pkg"
}

# copy_elf copies an ELF file and, through ldd, its shared libraries and
# loader into root $1, keeping their paths.
copy_elf() {
	local root=$1 file=$2 lib
	local real
	real=$(readlink -f "$file")
	mkdir -p "$root$(dirname "$file")" "$root$(dirname "$real")"
	cp -a "$file" "$root$file"
	[ "$real" = "$file" ] || cp -L "$real" "$root$real"
	for lib in $(ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

# module_order prints, for the modules named in MODULES and their
# dependencies, their paths relative to the modules directory $1, each after
# everything it depends on. A module's transitive dependencies, as
# modules.dep lists them, strictly include those of each module it needs, so
# sorting by their count is a dependency order.
module_order() {
	local dir=$1 m line
	for m in "${MODULES[@]}"; do
		line=$(grep -E "(^|/)${m}\.ko:" "$dir/modules.dep" || true)
		if [ -z "$line" ]; then
			grep -qE "/${m}\.ko$" "$dir/modules.builtin" && continue
			die "module $m is neither in the package nor built in"
		fi
		echo "$line"
		for dep in ${line#*:}; do
			grep -E "^${dep}:" "$dir/modules.dep"
		done
	done | sort -u | awk -F: '{n = split($2, d, " "); print n, $1}' | sort -n -k1,1 -k2,2 | awk '{print $2}'
}

build() {
	local pkg=$1 stamp=$2 root kver mdir tool
	WORK=$(mktemp -d /tmp/svcplan-vm-build.XXXXXX)
	trap 'rm -rf "$WORK"' EXIT
	local work=$WORK
	log "downloading $pkg"
	if ! (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1); then
		# The package lists may be stale and name a kernel the mirror no
		# longer has: refresh them and resolve the kernel again.
		apt-get update >/dev/null 2>&1 || true
		pkg=$(kernel_package)
		stamp="$pkg ${stamp#* }"
		log "downloading $pkg"
		(cd "$work" && apt-get download "$pkg" >/dev/null) || die "apt-get download $pkg failed"
	fi
	dpkg -x "$work"/"$pkg"_*.deb "$work/pkg"
	kver=$(ls "$work/pkg/lib/modules")
	[ -f "$work/pkg/boot/vmlinuz-$kver" ] || die "no vmlinuz-$kver in $pkg"

	root="$work/root"
	mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,run,tmp,root,var,svcplan}
	ln -s usr/bin "$root/bin"
	ln -s usr/sbin "$root/sbin"
	ln -s usr/lib "$root/lib"
	ln -s usr/lib64 "$root/lib64"
	ln -s ../run "$root/var/run"
	mknod -m 600 "$root/dev/console" c 5 1
	mknod -m 666 "$root/dev/null" c 1 3
	chmod 1777 "$root/tmp"

	# Busybox and its applets (a program of the same name copied later wins).
	cp /bin/busybox "$root/usr/bin/busybox"
	local applet
	for applet in $(/bin/busybox --list-full); do
		applet="usr/${applet#usr/}"
		[ -e "$root/$applet" ] || ln -s /usr/bin/busybox "$root/$applet"
	done

	# The networking tools, their libraries, and iptables' extensions.
	for tool in "${TOOLS[@]}"; do
		rm -f "$root/usr/bin/${tool##*/}" "$root/usr/sbin/${tool##*/}"
		copy_elf "$root" "$tool"
	done
	local xt
	for xt in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
		copy_elf "$root" "$xt"
	done
	local name variant multi
	for name in iptables ip6tables; do
		for variant in nft legacy; do
			multi=xtables-$variant-multi
			ln -sf "$multi" "$root/usr/sbin/$name-$variant"
			ln -sf "$multi" "$root/usr/sbin/$name-$variant-restore"
			ln -sf "$multi" "$root/usr/sbin/$name-$variant-save"
		done
		# nft is the default backend, as on Debian.
		rm -f "$root/usr/sbin/$name" "$root/usr/sbin/$name-restore" "$root/usr/sbin/$name-save"
		ln -s "$name-nft" "$root/usr/sbin/$name"
		ln -s "$name-nft-restore" "$root/usr/sbin/$name-restore"
		ln -s "$name-nft-save" "$root/usr/sbin/$name-save"
	done
	for name in protocols services ethertypes; do
		[ -f "/etc/$name" ] && cp "/etc/$name" "$root/etc/"
	done
	[ -d /etc/iproute2 ] && cp -a /etc/iproute2 "$root/etc/"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

	# Kernel modules: the wanted ones with their dependencies, and the
	# netfilter directories for on-demand loading; modules.dep comes from
	# busybox depmod, so that modprobe (the kernel's module helper) works.
	mdir="lib/modules/$kver"
	busybox depmod -b "$work/pkg" "$kver"
	# dummy would make a dummy0 link in every namespace without numdummies=0.
	module_order "$work/pkg/$mdir" | sed 's|/dummy\.ko$|& numdummies=0|' >"$root/etc/svcplan-modules"
	mkdir -p "$root/usr/$mdir"
	(
		cd "$work/pkg/$mdir"
		cp --parents $(cut -d' ' -f1 "$root/etc/svcplan-modules") "$root/usr/$mdir/"
		for d in "${ON_DEMAND[@]}"; do
			[ -d "$d" ] && cp -a --parents "$d" "$root/usr/$mdir/"
		done
		cp modules.builtin modules.builtin.modinfo modules.order "$root/usr/$mdir/"
	)
	busybox depmod -b "$root" "$kver"
	echo "$kver" >"$root/etc/svcplan-kernel"

	write_init "$root" "$kver"

	mkdir -p "$CACHE"
	local tmp="$CACHE/.build.$$"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	cp "$work/pkg/boot/vmlinuz-$kver" "$tmp/vmlinuz"
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$tmp/initramfs.cpio"
	{
		echo "stamp $stamp"
		echo "kernel $kver"
		echo "package $pkg"
		echo "modules $(wc -l <"$root/etc/svcplan-modules")"
	} >"$tmp/manifest"
	rm -rf "$CACHE/vmlinuz" "$CACHE/initramfs.cpio" "$CACHE/manifest"
	mv "$tmp/vmlinuz" "$tmp/initramfs.cpio" "$CACHE/"
	mv "$tmp/manifest" "$CACHE/manifest"
	rmdir "$tmp"
	log "ready in $CACHE: kernel $kver, $(wc -l <"$root/etc/svcplan-modules") modules at boot, initramfs $(du -h "$CACHE/initramfs.cpio" | cut -f1)"
}

# write_init writes the guest's /init.
write_init() {
	local root=$1 kver=$2
	cat >"$root/init" <<EOF
#!/bin/sh
# /init of the svcplan test VM (written by hack/vm-assets.sh).
export PATH=/usr/sbin:/usr/bin
export HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount --make-rshared /
echo /usr/sbin/modprobe >/proc/sys/kernel/modprobe
kernel_up=\$(cut -d' ' -f1 /proc/uptime)
failed=""
while read -r m params; do
	insmod "/lib/modules/$kver/\$m" \$params 2>/dev/null || failed="\$failed \${m##*/}"
done </etc/svcplan-modules
[ -n "\$failed" ] && echo "svcplan-vm: insmod failed:\$failed"
ip link set lo up
echo "svcplan-vm: booted \$(cut -d' ' -f1 /proc/uptime)s (kernel \${kernel_up}s, then \$(wc -l </etc/svcplan-modules) modules)"
rc=125
if [ -f /svcplan/run.sh ]; then
	sh /svcplan/run.sh
	rc=\$?
else
	echo "svcplan-vm: no /svcplan/run.sh in the initramfs"
fi
echo "SVCPLAN-VM-EXIT \$rc"
sync
poweroff -f
EOF
	chmod 755 "$root/init"
}

main() {
	install_packages
	local pkg stamp
	pkg=$(kernel_package)
	stamp="$pkg $(sha256sum "$0" | cut -c1-16)"
	if [ $FORCE -eq 0 ] && [ -f "$CACHE/manifest" ] && [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.cpio" ] &&
		grep -qxF "stamp $stamp" "$CACHE/manifest"; then
		log "cached in $CACHE ($pkg)"
		return 0
	fi
	build "$pkg" "$stamp"
}

main

#!/usr/bin/env bash
# Builds the tiny Linux guest VoidVM's integration tests boot: Debian's cloud kernel plus a
# busybox initramfs, taken from Debian packages with `apt-get download` (nothing is installed on
# the host). Outputs IMAGES_DIR/busybox/{vmlinuz,initrd.img,cmdline}; skips the work when they
# already exist. The guest prints VOIDVM-GUEST-READY on its serial console and powers off at once
# on an ACPI power-button press (QMP system_powerdown). With a NIC (eth0, virtio-net) it serves
# "VOIDVM-GUEST-HTTP <hostname>" with busybox httpd on port 80 and takes a DHCP lease with udhcpc,
# printing VOIDVM-GUEST-NET (address, router, DHCP server) on the console; without one it prints
# VOIDVM-GUEST-NO-NIC. With a NoCloud seed (a CD-ROM labelled cidata) it sets the hostname from
# meta-data's local-hostname, writes each user's ssh_authorized_keys to ~/.ssh/authorized_keys and
# prints VOIDVM-SEED lines (see "seed" in /init); without one it prints VOIDVM-SEED none.
#
# Usage: scripts/build-guest.sh [IMAGES_DIR]   (default: <repo>/.cache/images)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
images_dir="${1:-$repo_root/.cache/images}"
out="$images_dir/busybox"
# Bump when the guest changes, so that an older build in the cache is replaced.
guest_version=5

if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/cmdline" ] &&
  [ "$(cat "$out/version" 2>/dev/null)" = "$guest_version" ]; then
  echo "build-guest: $out already built"
  exit 0
fi

for cmd in apt-get apt-cache dpkg-deb cpio gzip; do
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "build-guest: '$cmd' is missing; run scripts/setup.sh" >&2
    exit 1
  }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
chown _apt "$work" 2>/dev/null || true # apt-get download runs as _apt and writes here

# The metapackage depends on the current versioned kernel, e.g. linux-image-6.1.0-56-cloud-amd64.
kernel_pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
  sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\).*/\1/p' | head -n1)"
if [ -z "$kernel_pkg" ]; then
  apt-get update >/dev/null
  kernel_pkg="$(apt-cache depends linux-image-cloud-amd64 |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\).*/\1/p' | head -n1)"
fi
if [ -z "$kernel_pkg" ]; then
  echo "build-guest: could not resolve the kernel behind linux-image-cloud-amd64" >&2
  exit 1
fi
echo "build-guest: downloading $kernel_pkg and busybox-static"

(cd "$work" && apt-get download "$kernel_pkg" busybox-static >/dev/null)
mkdir -p "$work/kernel" "$work/busybox"
dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"

kver="${kernel_pkg#linux-image-}"
vmlinuz="$work/kernel/boot/vmlinuz-$kver"
config="$work/kernel/boot/config-$kver"
moddir="$work/kernel/lib/modules/$kver"
[ -f "$vmlinuz" ] || { echo "build-guest: $vmlinuz not in the package" >&2; exit 1; }

# --- initramfs tree ---
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc/acpi/PWRF,lib/modules,www}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list-full); do
  [ "$applet" = "bin/busybox" ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done

# The power button needs the ACPI button driver (input events) and evdev (/dev/input/event*, read
# by busybox acpid); the NIC needs virtio-pci and virtio-net, and udhcpc raw packet sockets
# (af_packet); the CD-ROMs (the NoCloud seed, an attached ISO) need the virtio-scsi controller, the
# SCSI CD-ROM driver and ISO 9660; the VM's own disk (/dev/vda, which disk snapshot tests write
# to) needs virtio-blk. Built in (=y) needs nothing; a module (=m) is shipped with its dependencies
# (from the .ko's own .modinfo, the package has no modules.dep), decompressed, and loaded by /init
# in dependency order.
: >"$root/lib/modules/load-order"
find_ko() { find "$moddir/kernel" -name "$1.ko" -o -name "$1.ko.zst" -o -name "$1.ko.xz" -o -name "$1.ko.gz" | head -n1; }
ko_plain() { # decompresses (or copies) a module to stdout
  case "$1" in
    *.zst) zstd -q -d -c "$1" ;;
    *.xz) xz -d -c "$1" ;;
    *.gz) gzip -d -c "$1" ;;
    *) cat "$1" ;;
  esac
}
add_module() { # adds a module after its dependencies
  local name="$1" file dep
  grep -qx "$name.ko" "$root/lib/modules/load-order" && return 0
  file="$(find_ko "$name")"
  [ -n "$file" ] || { echo "build-guest: module $name not in the kernel package" >&2; exit 1; }
  ko_plain "$file" >"$root/lib/modules/$name.ko"
  for dep in $(tr '\0' '\n' <"$root/lib/modules/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$dep"
  done
  echo "$name.ko" >>"$root/lib/modules/load-order"
}
for triple in ACPI_BUTTON:button:power-down INPUT_EVDEV:evdev:power-down \
  VIRTIO_PCI:virtio_pci:networking VIRTIO_NET:virtio_net:networking PACKET:af_packet:DHCP \
  SCSI_VIRTIO:virtio_scsi:CD-ROMs BLK_DEV_SR:sr_mod:CD-ROMs ISO9660_FS:isofs:CD-ROMs \
  VIRTIO_BLK:virtio_blk:the-disk; do
  symbol="${triple%%:*}"
  rest="${triple#*:}"
  module="${rest%%:*}"
  what="${rest#*:}"
  setting="$(sed -n "s/^CONFIG_$symbol=\(.\)$/\1/p" "$config")"
  echo "build-guest: CONFIG_$symbol=${setting:-unset}"
  case "$setting" in
    y) ;;
    m) add_module "$module" ;;
    *) echo "build-guest: the kernel lacks CONFIG_$symbol; $what will not work" >&2 ;;
  esac
done
echo "build-guest: modules to load: $(tr '\n' ' ' <"$root/lib/modules/load-order")"

cat >"$root/etc/acpi/PWRF/00000080" <<'SH'
#!/bin/sh
echo "VOIDVM-GUEST-POWERDOWN" >/dev/console
sync
poweroff -f
SH
chmod 755 "$root/etc/acpi/PWRF/00000080"

# udhcpc's hook: configures the lease it got and says so on the console (in user-mode NAT the
# DHCP server and router are 10.0.2.2, which is also how the guest reaches the host).
cat >"$root/etc/udhcpc.script" <<'SH'
#!/bin/sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do
      ip route add default via "$r" dev "$interface"
      break
    done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "VOIDVM-GUEST-NET $interface $ip router ${router:-none} server ${serverid:-none}" >/dev/console
    ;;
esac
SH
chmod 755 "$root/etc/udhcpc.script"

cat >"$root/init" <<'SH'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# The NoCloud seed: the CD-ROM labelled cidata (busybox here has no blkid), read the way VoidVM writes it (meta-data's
# "local-hostname", and in a generated #cloud-config each user's "- name:" and the
# "ssh_authorized_keys:" lines under it, values JSON-quoted). A minimal stand-in for cloud-init.
unquote() { sed -e 's/^[^:]*: *//' -e 's/^ *- *//' -e 's/^"//' -e 's/"$//'; }
seed() {
  dev=""
  for _ in $(seq 50); do
    for d in /dev/sr*; do
      [ -b "$d" ] || continue
      # The ISO 9660 volume id: 32 bytes at 40 into the primary volume descriptor (sector 16).
      [ "$(dd if="$d" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')" = cidata ] && dev="$d" && break 2
    done
    sleep 0.1
  done
  if [ -z "$dev" ]; then
    echo "VOIDVM-SEED none" >/dev/console
    return
  fi
  mkdir -p /run/seed
  mount -t iso9660 -o ro "$dev" /run/seed || { echo "VOIDVM-SEED unreadable $dev" >/dev/console; return; }
  h="$(grep '^local-hostname:' /run/seed/meta-data | unquote)"
  [ -n "$h" ] && hostname "$h"
  echo "VOIDVM-SEED device=$dev instance=$(grep '^instance-id:' /run/seed/meta-data | unquote) hostname=$(hostname)" >/dev/console
  user=""
  inkeys=0
  while IFS= read -r line; do
    case "$line" in
      "  - name: "*) user="$(echo "$line" | unquote)"; inkeys=0 ;;
      "    ssh_authorized_keys:"*) inkeys=1 ;;
      "      - "*)
        if [ "$inkeys" = 1 ] && [ -n "$user" ]; then
          home="/home/$user"
          [ "$user" = root ] && home=/root
          mkdir -p "$home/.ssh"
          echo "$line" | unquote >>"$home/.ssh/authorized_keys"
          echo "VOIDVM-SEED key user=$user file=$home/.ssh/authorized_keys" >/dev/console
        fi
        ;;
      "    "*) inkeys=0 ;;
    esac
  done </run/seed/user-data
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m" 2>/dev/null
done
# busybox acpid reads the power button's input device and runs /etc/acpi/PWRF/00000080. READY
# only once it holds the device: a press before that would be lost.
acpid -f -c /etc/acpi -l /tmp/acpid.log &
acpid_pid=$!
for _ in $(seq 100); do
  ls -l "/proc/$acpid_pid/fd" 2>/dev/null | grep -q /dev/input/event && break
  sleep 0.1
done
echo "VOIDVM-GUEST-READY" >/dev/console
hostname voidvm-guest
# In the background: a guest without a seed need not wait for CD-ROMs that never appear.
seed &
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  echo "VOIDVM-GUEST-HTTP $(hostname)" >/www/index.html
  httpd -p 80 -h /www
  udhcpc -i eth0 -s /etc/udhcpc.script -t 30 -T 2 -n -q >/dev/console 2>&1 &
else
  echo "VOIDVM-GUEST-NO-NIC" >/dev/console
fi
while true; do
  setsid cttyhack sh
  sleep 1
done
SH
chmod 755 "$root/init"

mkdir -p "$out"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$out/initrd.img.tmp"
cp "$vmlinuz" "$out/vmlinuz.tmp"
echo "console=ttyS0 panic=-1 quiet" >"$out/cmdline.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/cmdline.tmp" "$out/cmdline"
echo "$guest_version" >"$out/version"
echo "build-guest: built $out ($kernel_pkg)"

#!/usr/bin/env bash
# Installs the Debian packages kvpn's tests and demo need, if missing.
# Idempotent; needs root. Go itself is expected at /usr/local/go or in PATH.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [ip]=iproute2
  [ss]=iproute2
  [nft]=nftables
  [ping]=iputils-ping
  [iperf3]=iperf3
  [openssl]=openssl
  [openconnect]=openconnect
  [ocserv]=ocserv
  [ocpasswd]=ocserv
  [occtl]=ocserv
  # RADIUS e2e tests (e2e/radius_test.go) run FreeRADIUS in a namespace.
  [freeradius]=freeradius
  [radclient]=freeradius-utils
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# openconnect runs this script by default to configure its tun device.
[ -x /usr/share/vpnc-scripts/vpnc-script ] || missing+=(vpnc-scripts)
# kTLS VM tests (e2e/ktlsvm): QEMU, a static busybox for the initramfs, and
# depmod/modprobe and xz to unpack Debian's kernel (the tests fetch that
# themselves with apt-get download into /var/cache/kvpn-ktls).
for pkg in qemu-system-x86 busybox-static kmod xz-utils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
# stop_freeradius stops and disables the system FreeRADIUS service the
# package starts on install: the tests run their own in a namespace, and a
# host one would hold ports 1812/1813. Works with and without systemd.
stop_freeradius() {
  command -v freeradius >/dev/null 2>&1 || return 0
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now freeradius.service >/dev/null 2>&1 || true
  else
    if [ -x /etc/init.d/freeradius ]; then
      /etc/init.d/freeradius stop >/dev/null 2>&1 || true
    fi
    command -v update-rc.d >/dev/null 2>&1 && update-rc.d freeradius disable >/dev/null 2>&1 || true
  fi
  return 0
}
if [ ${#missing[@]} -eq 0 ]; then
  [ "$(id -u)" -ne 0 ] || stop_freeradius
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run as root (make ...)" >&2
  exit 1
fi
# Sort and deduplicate.
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
stop_freeradius

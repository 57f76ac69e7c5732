#!/usr/bin/env bash
# System packages the test suite uses. As root, install the missing ones from Debian's
# packages; otherwise list them (tests that need them skip on a laptop, fail under CI=true).
set -euo pipefail

# command-or-path -> Debian package
declare -A NEED=(
  [nft]=nftables [ufw]=ufw [iptables]=iptables [ip]=iproute2 [nmap]=nmap [dig]=bind9-dnsutils
  [chromium]=chromium [/usr/lib/postgresql/15/bin/initdb]=postgresql [debootstrap]=debootstrap
  [systemd-nspawn]=systemd-container [unshare]=util-linux [sysctl]=procps [curl]=curl [git]=git
  [nsenter]=util-linux [dnsmasq]=dnsmasq-base
)
missing=()
for cmd in "${!NEED[@]}"; do
  if [[ $cmd == /* ]]; then [[ -x $cmd ]] || missing+=("${NEED[$cmd]}")
  else command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}"); fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
  echo "note: missing system packages (tests that need them will skip): ${missing[*]}" >&2
  exit 0
fi
echo "installing system packages for the tests: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null

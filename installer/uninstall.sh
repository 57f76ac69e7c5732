#!/bin/sh
# Berth agent uninstaller, served by the control plane:
#
#   curl -fsSL <control-plane>/uninstall.sh | sudo sh [-s -- --purge]
#
# Stops the services and the units, reverts the firewall to how it was before Berth and
# the DNS wiring exactly, removes the units, users and files (`berth installer remove`),
# then the venv. --purge also removes the data under /var/lib/berth*.
set -eu
PREFIX=/opt/berth
say() { printf 'berth-uninstall: %s\n' "$*" >&2; }
die() { printf 'berth-uninstall: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: curl -fsSL <control-plane>/uninstall.sh | sudo sh"
for a in "$@"; do
  case $a in
    --purge) ;;
    -h|--help) sed -n '2,9p' "$0" 2>/dev/null || true; exit 0 ;;
    *) die "unknown option '$a' (only --purge)" ;;
  esac
done
if [ -x "$PREFIX/venv/bin/berth" ]; then
  "$PREFIX/venv/bin/berth" installer remove "$@" || die "uninstall stopped (see above); fix that and run it again"
else
  say "no Berth venv in $PREFIX: nothing to run the uninstall with (already removed?)"
fi
rm -rf "$PREFIX"
say "removed $PREFIX"

#!/bin/sh
# Berth agent installer. The control plane serves this script with its own URL filled in:
#
#   curl -fsSL <control-plane>/install.sh | sudo sh -s -- --token <T> \
#       [--security-mode open|proxy-only|tunnel-only] [--ssh-cidr CIDR]... [--consent-block-ssh]
#
# This shell part checks the OS, installs Debian's python3/python3-venv/git if missing,
# installs Berth into a fresh venv under /opt/berth/venvs/ from the control plane's /dist/
# (the server needs no other source), unpacks the systemd units, then hands over to `berth
# installer setup` (registration, users, config, units, security mode). The units run
# /opt/berth/venv, a symlink: a first install points it at the new venv; run again, setup
# switches it over unit by unit and back if the new version does not come up (the same
# switch as `berth agent upgrade`). Safe to run again. A bad token, an unreachable control
# plane or an unsupported OS stop it before anything is left behind.
# Every file fetched from /dist/ must match the SHA-256 the control plane embedded below,
# and plain http is refused unless the control plane is on a loopback or private address
# (or --insecure-http is given).
set -eu

CP_URL='@BERTH_CONTROL_PLANE@'
# "sha256  file" for every file of the control plane's /dist/, filled in when served
DIST_SHA256='@BERTH_DIST_SHA256@'
INSECURE_HTTP=no
PREFIX=/opt/berth
EARLY_STOP=3  # `berth installer setup`: stopped before changing the system

say() { printf 'berth-install: %s\n' "$*" >&2; }
die() { printf 'berth-install: ERROR: %s\n' "$*" >&2; exit 1; }

# Take --control-plane for ourselves, and --token to hand over in the environment (a
# command line is visible to every local user); pass every other argument on unchanged.
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  case $a in
    --control-plane)
      [ "$n" -gt 0 ] || die "--control-plane needs a URL"
      CP_URL=$1; shift; n=$((n - 1)) ;;
    --control-plane=*) CP_URL=${a#*=} ;;
    --token)
      [ "$n" -gt 0 ] || die "--token needs the install token"
      BERTH_INSTALL_TOKEN=$1; export BERTH_INSTALL_TOKEN; shift; n=$((n - 1)) ;;
    --token=*) BERTH_INSTALL_TOKEN=${a#*=}; export BERTH_INSTALL_TOKEN ;;
    --insecure-http) INSECURE_HTTP=yes ;;
    -h|--help)
      sed -n '2,10p' "$0" 2>/dev/null || true
      echo "options: --token T --security-mode M --ssh-cidr CIDR --ssh-port N --consent-block-ssh"
      echo "         --allow-ssh-lockout --confirm-timeout S --dns-wiring auto|resolved|hosts|none"
      echo "         --control-plane URL (to reach the control plane at another address)"
      echo "         --insecure-http (allow http:// to a public address: anyone on the path could"
      echo "                          change what is installed; use https:// instead)"
      exit 0 ;;
    *) set -- "$@" "$a" ;;
  esac
done

# Plain http only to a loopback or private IP literal (or localhost), unless $2 is yes:
# on any other path, whoever is in between could serve their own script and packages.
check_http_url() {
  case $1 in http://*) ;; *) return 0 ;; esac
  [ "$2" = yes ] && return 0
  host=${1#http://}; host=${host%%/*}; host=${host##*@}
  case $host in
    \[*) host=${host#\[}; host=${host%%]*} ;;  # [v6]:port
    *) host=${host%:*} ;;
  esac
  host=$(printf '%s' "$host" | tr 'A-Z' 'a-z')
  case $host in
    localhost) return 0 ;;
    *[!0-9.]*) ;;  # not an IPv4 literal: a name can resolve anywhere
    127.*|10.*|192.168.*|169.254.*|172.1[6-9].*|172.2[0-9].*|172.3[01].*) return 0 ;;
  esac
  case $host in
    *[!0-9a-f:]*) ;;  # not an IPv6 literal
    ::1|fc*:*|fd*:*|fe80:*) return 0 ;;
  esac
  die "refusing plain http to $host (not a loopback or private address): serve the control plane over https://, or pass --insecure-http to accept that anyone on the way can change what is installed"
}

[ "$(id -u)" = 0 ] || die "run as root: curl -fsSL <control-plane>/install.sh | sudo sh -s -- --token <T>"
case $CP_URL in
  @*@|'') die "no control plane URL: download the script from the control plane, or pass --control-plane URL" ;;
  http://*|https://*) CP_URL=${CP_URL%/} ;;
  *) die "--control-plane must be an http(s):// URL, got '$CP_URL'" ;;
esac
check_http_url "$CP_URL" "$INSECURE_HTTP"
case $DIST_SHA256 in
  @*@|'') die "no package checksums in this script: download it from the control plane's /install.sh" ;;
esac

# --- the OS ------------------------------------------------------------------------------
[ -r /etc/os-release ] || die "unsupported OS: no /etc/os-release (Berth supports Debian 12+ and Ubuntu 22.04+)"
. /etc/os-release
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*|*" ubuntu "*) ;;
  *) die "unsupported OS '${PRETTY_NAME:-${ID:-unknown}}': Berth supports Debian 12+ and Ubuntu 22.04+" ;;
esac
[ -d /run/systemd/system ] || die "systemd is not running as init: Berth installs systemd units"

# --- the control plane -------------------------------------------------------------------
curl -fsS --max-time 15 -o /dev/null "$CP_URL/healthz" ||
  die "the control plane does not answer at $CP_URL/healthz: check the URL and this server's outbound network"

# --- Debian's python3, python3-venv and git ---------------------------------------------
need=""
python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || need="python3 python3-venv"
command -v git >/dev/null 2>&1 || need="$need git"
if [ -n "$need" ]; then
  say "installing$need (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends $need; } >/dev/null ||
    die "apt-get install$need failed; install them, then run this again"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python3 is older than 3.11: Berth needs Debian 12+ or Ubuntu 22.04+"
fi

# --- the packages, fetched and checked against this script's SHA-256 list -------------
# Nothing is installed from the network directly: pip reads only the checked copies.
dist=$(mktemp -d /tmp/berth-dist.XXXXXX)
trap 'rm -rf "$dist"' EXIT
printf '%s\n' "$DIST_SHA256" >"$dist/SHA256SUMS"
say "fetching Berth's packages from $CP_URL/dist/"
while read -r sum name; do
  curl -fsS --max-time 120 -o "$dist/$name" "$CP_URL/dist/$name" ||
    die "could not fetch $CP_URL/dist/$name"
done <"$dist/SHA256SUMS"
(cd "$dist" && sha256sum --strict --quiet -c SHA256SUMS) >&2 ||
  die "checksum mismatch on the packages from $CP_URL/dist/ (see above): they are not what the control plane's install.sh listed; nothing was installed"
[ -f "$dist/berth-systemd.tar.gz" ] || die "the control plane lists no berth-systemd.tar.gz"

# --- Berth into a fresh venv beside any old one, from the checked packages -------------
fresh=no
[ -e "$PREFIX" ] || fresh=yes
venv="$PREFIX/venvs/$(date -u +%Y%m%dT%H%M%S)"
cleanup() {
  if [ "$fresh" = yes ]; then rm -rf "$PREFIX"; say "removed $PREFIX: nothing is left installed"
  else rm -rf "$venv"; fi
}
say "installing Berth into $venv"
mkdir -p "$PREFIX/venvs"
python3 -m venv "$venv" || { cleanup; die "python3 -m venv failed (is python3-venv installed?)"; }
# --isolated: no PIP_* environment or pip.conf of this host steers where Berth comes from.
pip="$venv/bin/pip --quiet --disable-pip-version-check --isolated"
$pip install --no-index --find-links "$dist" berth ||
  { cleanup; die "pip could not install Berth from the packages of $CP_URL/dist/ (see above)"; }
# a first install: the units' path points at it now (a re-run switches in setup)
[ -e "$PREFIX/venv" ] || [ -L "$PREFIX/venv" ] || ln -s "venvs/${venv##*/}" "$PREFIX/venv"
rm -rf "$PREFIX/systemd.new" && mkdir -p "$PREFIX/systemd.new"
tar -xzf "$dist/berth-systemd.tar.gz" -C "$PREFIX/systemd.new" ||
  { cleanup; die "could not unpack the systemd units (berth-systemd.tar.gz)"; }
rm -rf "$PREFIX/systemd" && mv "$PREFIX/systemd.new" "$PREFIX/systemd"

# --- registration, users, config, units, security mode -----------------------------------
set +e
"$venv/bin/berth" installer setup --control-plane "$CP_URL" --units-dir "$PREFIX/systemd" --venv "$venv" "$@"
status=$?
set -e
if [ "$status" = "$EARLY_STOP" ]; then cleanup; exit 1; fi
# a re-run that failed switched back (or never switched): drop the unused venv
[ "$(readlink -f "$PREFIX/venv")" = "$(readlink -f "$venv")" ] || rm -rf "$venv"
exit "$status"

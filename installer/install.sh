#!/bin/sh
# Berth agent installer. The control plane serves this script with its own URL filled in:
#
#   curl -fsSL <control-plane>/install.sh | sudo sh -s -- --token <T> \
#       [--security-mode open|proxy-only|tunnel-only] [--ssh-cidr CIDR]... [--consent-block-ssh]
#
# This shell part checks the OS, installs Debian's python3/python3-venv/git if missing,
# installs Berth into /opt/berth/venv from the control plane's /dist/ (the server needs no
# other source), unpacks the systemd units, then hands over to `berth installer setup`
# (registration, users, config, units, security mode). Safe to run again. A bad token, an
# unreachable control plane or an unsupported OS stop it before anything is left behind.
set -eu

CP_URL='@BERTH_CONTROL_PLANE@'
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
    -h|--help)
      sed -n '2,10p' "$0" 2>/dev/null || true
      echo "options: --token T --security-mode M --ssh-cidr CIDR --ssh-port N --consent-block-ssh"
      echo "         --allow-ssh-lockout --confirm-timeout S --dns-wiring auto|resolved|hosts|none"
      echo "         --control-plane URL (when not run from the control plane's /install.sh)"
      exit 0 ;;
    *) set -- "$@" "$a" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root: curl -fsSL <control-plane>/install.sh | sudo sh -s -- --token <T>"
case $CP_URL in
  @*@|'') die "no control plane URL: download the script from the control plane, or pass --control-plane URL" ;;
  http://*|https://*) CP_URL=${CP_URL%/} ;;
  *) die "--control-plane must be an http(s):// URL, got '$CP_URL'" ;;
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

# --- Berth into its own venv, from the control plane -------------------------------------
fresh=no
[ -e "$PREFIX" ] || fresh=yes
cleanup() {
  if [ "$fresh" = yes ]; then rm -rf "$PREFIX"; say "removed $PREFIX: nothing is left installed"; fi
}
say "installing Berth into $PREFIX/venv from $CP_URL/dist/"
if ! [ -x "$PREFIX/venv/bin/python" ]; then
  python3 -m venv "$PREFIX/venv" || { cleanup; die "python3 -m venv failed (is python3-venv installed?)"; }
fi
# --isolated: no PIP_* environment or pip.conf of this host steers where Berth comes from.
# A plain-http control plane is the operator's choice of URL: trust it for this install.
pip="$PREFIX/venv/bin/pip --quiet --disable-pip-version-check --isolated"
case $CP_URL in
  http://*) cp_host=${CP_URL#http://}; cp_host=${cp_host%%/*}; cp_host=${cp_host%:*}
            pip="$pip --trusted-host $cp_host" ;;
esac
{ $pip install --no-index --find-links "$CP_URL/dist/" --upgrade berth &&
  $pip install --no-index --find-links "$CP_URL/dist/" --force-reinstall --no-deps berth; } ||
  { cleanup; die "pip could not install Berth from $CP_URL/dist/ (see above)"; }
rm -rf "$PREFIX/systemd.new" && mkdir -p "$PREFIX/systemd.new"
curl -fsSL --max-time 60 "$CP_URL/dist/berth-systemd.tar.gz" | tar -xzf - -C "$PREFIX/systemd.new" ||
  { cleanup; die "could not fetch the systemd units from $CP_URL/dist/berth-systemd.tar.gz"; }
rm -rf "$PREFIX/systemd" && mv "$PREFIX/systemd.new" "$PREFIX/systemd"

# --- registration, users, config, units, security mode -----------------------------------
set +e
"$PREFIX/venv/bin/berth" installer setup --control-plane "$CP_URL" --units-dir "$PREFIX/systemd" "$@"
status=$?
set -e
if [ "$status" = "$EARLY_STOP" ]; then cleanup; exit 1; fi
exit "$status"

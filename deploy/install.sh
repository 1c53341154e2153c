#!/bin/sh
# Install vaultdrop as a systemd service on this host (Debian 12 or later), as root, from
# a checkout: `make install` (which first installs the Debian build packages), or
# `deploy/install.sh` directly. Safe to run again to upgrade: the configuration and the
# secrets in /etc/vaultdrop are never overwritten.
#
#   PREFIX=/opt/vaultdrop   where the program's virtualenv goes (the unit's ExecStart)
#   PYTHON=/usr/bin/python3 the interpreter it is built on (default: Debian's, else python3)
#   --no-venv               keep the program already in $PREFIX (service files only)
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/vaultdrop}
[ -x /usr/bin/python3 ] && DEFAULT_PYTHON=/usr/bin/python3 || DEFAULT_PYTHON=python3
PYTHON=${PYTHON:-$DEFAULT_PYTHON}
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

if [ "${1:-}" != "--no-venv" ]; then
    echo "== program: $PREFIX"
    case $(readlink -f "$(command -v "$PYTHON")") in
        /home/*|/root/*) echo "install.sh: $PYTHON lives in a home directory, which the unit hides" \
                              "(ProtectHome=yes): use PYTHON=/usr/bin/python3" >&2; exit 1 ;;
    esac
    "$PYTHON" -m venv "$PREFIX"
    "$PREFIX/bin/pip" install -q --upgrade pip
    "$PREFIX/bin/pip" install -q "$SRC"
    install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
fi
# On the PATH, for root and for the members of the vaultdrop group, who may read the
# journal (`vaultdrop status`, `vaultdrop jobs`) without root and without the password.
ln -sfn "$PREFIX/bin/vaultdrop" /usr/local/bin/vaultdrop

echo "== user vaultdrop, folders under /srv/vaultdrop"
install -D -m 0644 "$SRC/deploy/vaultdrop.sysusers" /etc/sysusers.d/vaultdrop.conf
systemd-sysusers /etc/sysusers.d/vaultdrop.conf
install -D -m 0644 "$SRC/deploy/vaultdrop.tmpfiles" /etc/tmpfiles.d/vaultdrop.conf
systemd-tmpfiles --create /etc/tmpfiles.d/vaultdrop.conf

echo "== configuration: /etc/vaultdrop"
install -d -m 0750 -o root -g vaultdrop /etc/vaultdrop
if [ ! -e /etc/vaultdrop/vaultdrop.toml ]; then
    install -m 0640 -o root -g vaultdrop "$SRC/config.example.toml" /etc/vaultdrop/vaultdrop.toml
fi

echo "== unit and journal message catalog"
install -D -m 0644 "$SRC/deploy/vaultdrop.service" /etc/systemd/system/vaultdrop.service
install -D -m 0644 "$SRC/deploy/vaultdrop.catalog" /usr/local/lib/systemd/catalog/vaultdrop.catalog
journalctl --update-catalog
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

echo "== bash completion and man page (generated from the program's own parser)"
install -d /usr/share/bash-completion/completions /usr/local/share/man/man1
"$PREFIX/bin/vaultdrop" completion bash > /usr/share/bash-completion/completions/vaultdrop
"$PREFIX/bin/vaultdrop" manpage | gzip -9n > /usr/local/share/man/man1/vaultdrop.1.gz

cat <<'NEXT'

vaultdrop is installed. Next:
  1. edit /etc/vaultdrop/vaultdrop.toml (vault user, base_url, folders);
     folders outside /srv/vaultdrop also need `systemctl edit vaultdrop`:
       [Service]
       ReadWritePaths=/your/folder
  2. store the vault password (read by the unit as the credential vault-password):
       install -m 0600 /dev/stdin /etc/vaultdrop/vault-password   (type it, then Ctrl-D)
  3. check and start:
       CREDENTIALS_DIRECTORY=/etc/vaultdrop vaultdrop check-config
       systemctl enable --now vaultdrop
       journalctl -u vaultdrop -f
  Operators who drop files and read `vaultdrop status` / `vaultdrop jobs`: usermod -aG vaultdrop NAME
NEXT

#!/bin/sh
# Boot a User Mode Linux guest whose display manager shows up on the host's X display
# through xbridge. No root needed: a user namespace gives the private mount namespace.
#
#   run-guest.sh --mode tcp|exec --key KEYFILE --xwrap GUEST_XWRAP --work DIR
#                [--dm xdm|xinit] [--port 6010] [--agent-cmd FILE] [--mem 256M]
#                [--env NAME=VALUE]…   (passed to the guest's init; values without spaces)
#
# tcp:  the guest dials 10.0.2.2:PORT, which slirp maps to the host's 127.0.0.1:PORT, where
#       host-agent listens.
# exec: slirp's `add exec` runs --agent-cmd (e.g. `host-agent stdio …` in a script) for each
#       guest connection to 10.0.2.1:PORT; nothing listens on the host at all.
#
# The guest's root is a private directory (hostfs confined with hostfs=DIR) holding read-only
# bind mounts of the host's /usr, /etc, /bin, /sbin, /lib*, the directory of guest-xwrap, and
# the directory of the pairing key; nothing else of the host is visible to the guest.
set -eu
mode=tcp dm=xdm port=6010 mem=256M key= xwrap= work= agent_cmd= extra_env=
while [ $# -gt 0 ]; do
    case "$1" in
    --mode) mode=$2; shift 2 ;;
    --dm) dm=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --xwrap) xwrap=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --agent-cmd) agent_cmd=$2; shift 2 ;;
    --env) extra_env="$extra_env $2"; shift 2 ;;
    --inside) inside=1; shift ;;
    *) echo "run-guest.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for need in key xwrap work; do
    eval "v=\${$need}"
    [ -n "$v" ] || { echo "run-guest.sh: --$need is required" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")" && pwd)
root="$work/root"

if [ -z "${inside:-}" ]; then
    command -v linux.uml >/dev/null || { echo "run-guest.sh: linux.uml missing: apt-get install user-mode-linux slirp" >&2; exit 2; }
    mkdir -p "$root"
    # Root may mount directly; anyone else gets a user namespace of their own.
    if [ "$(id -u)" = 0 ]; then ns="--mount"; else ns="--user --map-root-user --mount"; fi
    # shellcheck disable=SC2086
    set --
    for e in $extra_env; do set -- "$@" --env "$e"; done
    exec unshare $ns --propagation private "$0" --inside --mode "$mode" --dm "$dm" --port "$port" \
        --mem "$mem" --key "$key" --xwrap "$xwrap" --work "$work" ${agent_cmd:+--agent-cmd "$agent_cmd"} "$@"
fi

bind_ro() { # host path, path inside the guest root
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    mount -o remount,bind,ro "$root$2"
}
for d in /usr /etc /bin /sbin /lib /lib64 /lib32 /libx32; do
    [ -d "$d" ] && [ ! -L "$d" ] && bind_ro "$d" "$d"
    [ -L "$d" ] && { rm -f "$root$d"; ln -s "$(readlink "$d")" "$root$d"; }
done
bind_ro "$(dirname "$xwrap")" /xbridge/bin
bind_ro "$(dirname "$key")" /xbridge/key
bind_ro "$here" /xbridge/init
# The host's font cache spares the greeter a font scan on every boot.
[ -d /var/cache/fontconfig ] && bind_ro /var/cache/fontconfig /xbridge/fontconfig
for d in proc sys dev tmp run var; do mkdir -p "$root/$d"; done

case "$mode" in
tcp) agent="tcp:10.0.2.2:$port" ;;
exec)
    [ -n "$agent_cmd" ] || { echo "run-guest.sh: --mode exec needs --agent-cmd" >&2; exit 2; }
    agent="tcp:10.0.2.1:$port"
    # slirp reads $HOME/.slirprc; give it a home of its own.
    mkdir -p "$work/slirp-home"
    echo "add exec $agent_cmd:$port" > "$work/slirp-home/.slirprc"
    export HOME="$work/slirp-home"
    ;;
*) echo "run-guest.sh: --mode must be tcp or exec" >&2; exit 2 ;;
esac

export TMPDIR="$work"
exec linux.uml mem="$mem" hostfs="$root" rootfstype=hostfs rootflags=/ ro \
    init=/xbridge/init/guest-init.sh con=null con0=fd:0,fd:1 \
    eth0=slirp,,/usr/bin/slirp-fullbolt \
    XBRIDGE_AGENT="$agent" XBRIDGE_DM="$dm" $extra_env </dev/null

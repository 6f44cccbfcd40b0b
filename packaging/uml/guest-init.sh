#!/bin/sh
# xbridge UML guest init: PID 1 of a guest whose root is the host's system, read-only.
# Mounts what must be writable, brings up slirp networking, installs the pairing key and
# starts a display manager whose X server is guest-xwrap. Parameters arrive as environment
# variables from the kernel command line (see run-guest.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "xbridge-guest: $*"; }
poweroff_now() { say "powering off"; sync; echo o > /proc/sysrq-trigger; sleep 10; }

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null || say "no devtmpfs"
for d in /tmp /run /var; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
chmod 1777 /tmp
mkdir -p /tmp/.X11-unix /var/log/xbridge /var/lib/xkb /var/run /run/xdm /run/xbridge
chmod 1777 /tmp/.X11-unix
if [ -d /xbridge/fontconfig ]; then
    mkdir -p /var/cache/fontconfig && mount --bind /xbridge/fontconfig /var/cache/fontconfig
fi
chmod 700 /run/xbridge
hostname "${XBRIDGE_HOSTNAME:-xbridge-guest}"

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
say "network up (10.0.2.15, host at 10.0.2.2)"

# The key comes through the /xbridge/key share; the guest keeps a root-only copy.
install -m 600 /xbridge/key/guest.key /run/xbridge/guest.key || { say "no pairing key in /xbridge/key"; poweroff_now; }
cat > /run/xbridge/xwrap.toml <<TOML
agent = "${XBRIDGE_AGENT:-tcp:10.0.2.2:6010}"
key_file = "/run/xbridge/guest.key"
log_file = "/var/log/xbridge/xwrap.log"
title = "${XBRIDGE_TITLE:-xbridge-uml-guest}"
server = "${XBRIDGE_SERVER:-auto}"
TOML
# Tests name a host path that must not be visible here (the host's X cookie file).
if [ -n "${XBRIDGE_PROBE:-}" ]; then
    if [ -e "$XBRIDGE_PROBE" ]; then say "probe $XBRIDGE_PROBE VISIBLE"; else say "probe $XBRIDGE_PROBE absent"; fi
fi
XWRAP="/xbridge/bin/guest-xwrap --config /run/xbridge/xwrap.toml"
if [ -n "${XBRIDGE_DEBUG:-}" ]; then
    # Follow the wrapper's and the display manager's logs on the console.
    XWRAP="$XWRAP -vv"
    touch /var/log/xbridge/xwrap.log /var/log/xdm.log
    tail -F /var/log/xbridge/xwrap.log /var/log/xdm.log &
fi

case "${XBRIDGE_DM:-xdm}" in
xdm)
    cat > /run/xdm/xdm-config <<XDM
DisplayManager.authDir: /run/xdm
DisplayManager.errorLogFile: /var/log/xdm.log
DisplayManager.pidFile: /run/xdm/xdm.pid
DisplayManager.keyFile: /etc/X11/xdm/xdm-keys
DisplayManager.servers: /run/xdm/Xservers
DisplayManager.requestPort: 0
DisplayManager*resources: /etc/X11/xdm/Xresources
DisplayManager*authorize: true
XDM
    echo ":0 local $XWRAP :0" > /run/xdm/Xservers
    say "display manager xdm starting"
    xdm -nodaemon -config /run/xdm/xdm-config
    say "xdm exited ($?)"
    ;;
xinit)
    say "display manager xinit starting"
    xinit /usr/bin/xclock -update 1 -- $XWRAP :0
    say "xinit exited ($?)"
    ;;
bench)
    # X traffic through slirp and the agent, measured from inside the guest: a proxy display
    # and x11perf against it. The same x11perf run on the host gives the baseline.
    /xbridge/bin/guest-xwrap proxy --display :50 --config /run/xbridge/xwrap.toml > /run/xbridge/proxy.env &
    sleep 1
    XAUTHORITY=$(sed -n 's/^XAUTHORITY=//p' /run/xbridge/proxy.env)
    export XAUTHORITY
    for test in ${XBRIDGE_BENCH:--putimage100 -getimage100 -prop}; do
        x11perf -display :50 -repeat 2 -time 2 "$test" 2>&1 | grep -E "reps|trep" | tail -1 | sed "s/^/xbridge-guest: bench $test: /"
    done
    ;;
*)
    say "unknown XBRIDGE_DM=${XBRIDGE_DM}"
    ;;
esac
echo "--- /var/log/xbridge/xwrap.log"; cat /var/log/xbridge/xwrap.log 2>/dev/null | tail -n 20
poweroff_now

#!/bin/sh
# /init of Tessera's Linux test initramfs (built by `cargo xtask linux-images`; see README.md).
# Every line the tests read starts with a fixed word; the system test and the bench parse them.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
tsc=$(/bin/tessera-tsc)
echo "TESSERA-LINUX: init reached tsc=$tsc"
echo "kernel: $(uname -r)"
echo "nproc: $(nproc)"
echo "MemTotal: $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) kB"
dmesg | grep -i x2apic | sed 's/^/dmesg: /'
sed 's/^/interrupts: /' /proc/interrupts
restarts=0
for word in $(cat /proc/cmdline); do
    case "$word" in
        tessera.restarts=*) restarts="${word#tessera.restarts=}" ;;
    esac
done
echo "restarts: $restarts"
case " $(cat /proc/cmdline) " in
    *" tessera.reboot-test "*)
        if [ "$restarts" = 0 ]; then
            echo "TESSERA-LINUX: rebooting"
            reboot -f
            sleep 5
            echo "TESSERA-LINUX: reboot -f returned"
        fi
        ;;
esac
n=0
while true; do
    n=$((n + 1))
    echo "TESSERA-LINUX: heartbeat $n"
    sleep 1
done

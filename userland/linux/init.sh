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
case " $(cat /proc/cmdline) " in
    *" tessera.net-test "*)
        # A passed-through e1000e (docs/pci-iommu.md): the in-tree driver, a DHCP lease from
        # QEMU's user network, ICMP to its gateway, and the MSI-X vectors' counts.
        if insmod /lib/modules/e1000e.ko; then
            echo "TESSERA-LINUX: e1000e loaded"
        else
            echo "TESSERA-LINUX: e1000e insmod failed"
        fi
        tries=0
        while [ ! -e /sys/class/net/eth0 ] && [ "$tries" -lt 20 ]; do
            sleep 1
            tries=$((tries + 1))
        done
        ip link set eth0 up
        cat > /tmp/udhcpc.sh <<'SCRIPT'
#!/bin/sh
case "$1" in
    bound|renew)
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        echo "TESSERA-LINUX: lease $ip/$mask router $router dev $interface"
        ;;
esac
SCRIPT
        chmod 755 /tmp/udhcpc.sh
        udhcpc -i eth0 -s /tmp/udhcpc.sh -n -q -t 10 -T 3 2>&1 | sed 's/^/udhcpc: /'
        ping -c 5 -W 3 10.0.2.2 2>&1 | sed 's/^/ping: /'
        grep -e eth0 -e PCI-MSI /proc/interrupts | sed 's/^/net-interrupts: /'
        # The kind of each of the NIC's message interrupts ("msi" or "msix").
        for irq in /sys/bus/pci/devices/0000:00:02.0/msi_irqs/*; do
            [ -e "$irq" ] && echo "msi-irqs: ${irq##*/} $(cat "$irq")"
        done
        echo "TESSERA-LINUX: net-test done"
        ;;
esac
n=0
while true; do
    n=$((n + 1))
    echo "TESSERA-LINUX: heartbeat $n"
    sleep 1
done

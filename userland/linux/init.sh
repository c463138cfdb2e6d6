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
# Brings interface `$1` up and takes a DHCP lease from QEMU's user network (udhcpc's
# script adds the address and the default route and prints `TESSERA-LINUX: lease …`).
dhcp_lease() {
    ip link set "$1" up
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
    udhcpc -i "$1" -s /tmp/udhcpc.sh -n -q -t 10 -T 3 2>&1 | sed 's/^/udhcpc: /'
}
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
        dhcp_lease eth0
        # `tessera.ping-count=N`: N pings back to back (`-A`: the next when the reply is
        # in), for the exits-per-packet measurement of docs/pci-iommu.md; default 5, 1/s.
        ping_count=
        for word in $(cat /proc/cmdline); do
            case "$word" in
                tessera.ping-count=*) ping_count="${word#tessera.ping-count=}" ;;
            esac
        done
        if [ -n "$ping_count" ]; then
            ping -A -c "$ping_count" -W 3 10.0.2.2 2>&1 | tail -n 2 | sed 's/^/ping: /'
        else
            ping -c 5 -W 3 10.0.2.2 2>&1 | sed 's/^/ping: /'
        fi
        grep -e eth0 -e PCI-MSI /proc/interrupts | sed 's/^/net-interrupts: /'
        # The kind of each of the NIC's message interrupts ("msi" or "msix").
        for irq in /sys/bus/pci/devices/0000:00:02.0/msi_irqs/*; do
            [ -e "$irq" ] && echo "msi-irqs: ${irq##*/} $(cat "$irq")"
        done
        # The NIC's extended capabilities as Linux reads them through the ECAM window
        # (PCIe 4.0 §7.6.3: ID in bits 15:0, next offset in bits 31:20), at most 16.
        config=/sys/bus/pci/devices/0000:00:02.0/config
        offset=256
        chain=
        steps=0
        while [ "$offset" -ge 256 ] && [ "$steps" -lt 16 ]; do
            header=$(od -An -tx4 -j "$offset" -N 4 "$config" 2>/dev/null | tr -d ' ')
            case "$header" in
                "" | 00000000 | ffffffff) break ;;
            esac
            chain="$chain $(printf '0x%04x@0x%x' $((0x$header & 0xffff)) "$offset")"
            offset=$(((0x$header >> 20) & 0xffc))
            steps=$((steps + 1))
        done
        echo "TESSERA-LINUX: extended-capabilities${chain:- none}"
        echo "TESSERA-LINUX: net-test done"
        ;;
esac
# Hot standby of the NIC (docs/health.md, "A Linux standby takes over a NIC"): the same
# driver, lease and ping as net-test, on the interface `$1`.
nic_traffic() {
    dhcp_lease "$1"
    ping -c 5 -W 3 10.0.2.2 2>&1 | sed 's/^/ping: /'
    grep -e "$1" /proc/interrupts | sed 's/^/net-interrupts: /'
    for function in /sys/class/net/"$1"/device; do
        echo "nic-function: $(basename "$(readlink "$function")") driver=$(basename "$(readlink "$function/driver")")"
        for irq in "$function"/msi_irqs/*; do
            [ -e "$irq" ] && echo "msi-irqs: ${irq##*/} $(cat "$irq")"
        done
    done
}
# The numbered record stream through the NIC (docs/health.md, "A Linux standby takes over
# a NIC"): record N is an HTTP GET of /record/N from the collector the system test runs
# on the host at 10.0.2.2:PORT (QEMU's user network forwards 10.0.2.2 to the host's
# loopback); the answer `ack N` acknowledges it. PORT is `tessera.stream=PORT`; without it
# there is no stream. Requests go through `nc` (busybox's static `wget` crashes).
stream_get() {
    printf 'GET %s HTTP/1.0\r\n\r\n' "$2" | nc -w 5 10.0.2.2 "$1" 2>&1 | tail -n 1
}
stream_port() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            tessera.stream=*) echo "${word#tessera.stream=}" ;;
        esac
    done
}
# stream_records FIRST COUNT: records FIRST to FIRST+COUNT-1, one at a time, each printed
# once acknowledged; the first one without its acknowledgement ends the stream.
stream_records() {
    port=$(stream_port)
    [ -n "$port" ] || return 0
    record=$1
    last=$(($1 + $2 - 1))
    while [ "$record" -le "$last" ]; do
        answer=$(stream_get "$port" "/record/$record")
        if [ "$answer" != "ack $record" ]; then
            echo "TESSERA-LINUX: stream no ack for $record: $answer"
            return 1
        fi
        echo "TESSERA-LINUX: stream acked $record"
        record=$((record + 1))
    done
}
# The first interface other than `lo`, or nothing.
nic_name() {
    for interface in /sys/class/net/*; do
        [ "${interface##*/}" != lo ] && [ -e "$interface" ] && echo "${interface##*/}" && return
    done
}
case " $(cat /proc/cmdline) " in
    *" tessera.nic-primary "*)
        # The primary: traffic, then a kernel crash (sysrq `c`); `panic=-1 reboot=acpi`
        # make the panic write the ACPI reset register, which the hypervisor reports as
        # `reset-request`.
        insmod /lib/modules/e1000e.ko && echo "TESSERA-LINUX: e1000e loaded"
        tries=0
        while [ -z "$(nic_name)" ] && [ "$tries" -lt 20 ]; do
            sleep 1
            tries=$((tries + 1))
        done
        nic_traffic "$(nic_name)"
        echo "TESSERA-LINUX: nic-primary done"
        # The stream runs on while the kernel crashes: the crash falls between two
        # records, or between a record and its acknowledgement.
        if [ -n "$(stream_port)" ]; then
            stream_records 1 100000 &
            sleep 3
        fi
        echo "TESSERA-LINUX: crashing"
        # A write to the console returns once the bytes are in the tty's buffer, not on
        # the wire; the panic would cut off what the UART has not sent yet.
        sleep 1
        echo c > /proc/sysrq-trigger
        echo "TESSERA-LINUX: still running after the crash"
        ;;
    *" tessera.nic-standby "*)
        # The standby: the driver is loaded with no device to bind; the function appears
        # on the bus only at the takeover, so ask the kernel to rescan four times a second
        # (at most `tessera.nic-wait` seconds, default 240) until an interface shows up.
        insmod /lib/modules/e1000e.ko && echo "TESSERA-LINUX: e1000e loaded"
        wait_seconds=240
        for word in $(cat /proc/cmdline); do
            case "$word" in
                tessera.nic-wait=*) wait_seconds="${word#tessera.nic-wait=}" ;;
            esac
        done
        echo "TESSERA-LINUX: standby waiting for a NIC tsc=$(/bin/tessera-tsc)"
        rescans=0
        while [ -z "$(nic_name)" ] && [ "$rescans" -lt $((wait_seconds * 4)) ]; do
            echo 1 > /sys/bus/pci/rescan
            rescans=$((rescans + 1))
            [ -z "$(nic_name)" ] && sleep 0.25
        done
        interface=$(nic_name)
        if [ -n "$interface" ]; then
            echo "TESSERA-LINUX: standby found $interface after $rescans rescans tsc=$(/bin/tessera-tsc)"
            nic_traffic "$interface"
            port=$(stream_port)
            if [ -n "$port" ]; then
                # Resume after the last record the collector holds, acknowledged or not.
                answer=$(stream_get "$port" /last)
                echo "TESSERA-LINUX: stream resumes after ${answer#last }"
                stream_records $((${answer#last } + 1)) 10
            fi
            echo "TESSERA-LINUX: nic-standby done"
        else
            echo "TESSERA-LINUX: standby found no NIC after $rescans rescans"
        fi
        echo "TESSERA-LINUX: powering off"
        # As before the primary's crash: let the UART (polled: the standby's console has
        # no interrupt pin) send what is in the tty's buffer before the power goes.
        sleep 1
        poweroff -f
        ;;
esac
# The NVMe driver and its module chain (tools/xtask/src/linux/images.rs, MODULES: each
# module's dependencies come before it), then /dev/nvme0n1.
nvme_up() {
    for module in crct10dif_common crct10dif_generic crc-t10dif crc64 \
        crc64_rocksoft_generic crc64-rocksoft t10-pi nvme-core nvme; do
        if ! insmod "/lib/modules/$module.ko"; then
            echo "TESSERA-LINUX: insmod $module failed"
            return 1
        fi
    done
    echo "TESSERA-LINUX: nvme loaded"
    tries=0
    while [ ! -b /dev/nvme0n1 ] && [ "$tries" -lt 30 ]; do
        sleep 1
        tries=$((tries + 1))
    done
    if [ ! -b /dev/nvme0n1 ]; then
        echo "TESSERA-LINUX: no /dev/nvme0n1"
        return 1
    fi
    echo "TESSERA-LINUX: nvme0n1 sectors=$(cat /sys/block/nvme0n1/size)"
}
nvme_mib=8
nvme_marker=0
for word in $(cat /proc/cmdline); do
    case "$word" in
        tessera.nvme-mib=*) nvme_mib="${word#tessera.nvme-mib=}" ;;
        tessera.nvme-marker=*) nvme_marker="${word#tessera.nvme-marker=}" ;;
    esac
done
case " $(cat /proc/cmdline) " in
    *" tessera.nvme-test "*)
        # A passed-through NVMe disk (docs/pci-iommu.md): the in-tree driver reads the
        # test-written image (its SHA-256 over `tessera.nvme-mib` MiB), then writes a marker
        # sector at `tessera.nvme-marker` (512-byte sectors) that the test finds in the image
        # file after QEMU has exited.
        if nvme_up; then
            sum=$(dd if=/dev/nvme0n1 bs=1M count="$nvme_mib" iflag=direct 2>/dev/null | sha256sum)
            echo "TESSERA-LINUX: nvme-sha256 mib=$nvme_mib ${sum%% *}"
            printf 'TESSERA-NVME-MARKER sector=%s\n' "$nvme_marker" |
                dd of=/dev/nvme0n1 bs=512 seek="$nvme_marker" count=1 conv=sync,notrunc,fsync 2>&1 |
                sed 's/^/dd: /'
            sync
            echo "TESSERA-LINUX: nvme-marker written sector=$nvme_marker"
        fi
        grep nvme /proc/interrupts | sed 's/^/nvme-interrupts: /'
        for irq in /sys/bus/pci/devices/0000:00:04.0/msi_irqs/*; do
            [ -e "$irq" ] && echo "msi-irqs: ${irq##*/} $(cat "$irq")"
        done
        dmesg | grep -i -e nvme -e dmar -e amd-vi -e iommu | sed 's/^/dmesg: /'
        echo "TESSERA-LINUX: nvme-test done"
        ;;
    *" tessera.nvme-bench "*)
        # The NVMe read figure (`cargo xtask bench`, nvme_read_throughput_ratio): three
        # reads of `tessera.nvme-mib` MiB with O_DIRECT, each timed by the TSC.
        if nvme_up; then
            for run in 1 2 3; do
                start=$(/bin/tessera-tsc)
                dd if=/dev/nvme0n1 of=/dev/null bs=1M count="$nvme_mib" iflag=direct 2>/dev/null
                end=$(/bin/tessera-tsc)
                echo "TESSERA-LINUX: nvme-read run=$run mib=$nvme_mib tsc=$((end - start))"
            done
        fi
        echo "TESSERA-LINUX: nvme-bench done"
        ;;
esac
# The bench's Linux boot (partitions/linux-bench.toml): power off once /init has printed
# its lines, so that the hypervisor prints the partition's exit counters
# (`linux_unassigned_port_exits`, docs/benchmarks.md).
case " $(cat /proc/cmdline) " in
    *" tessera.power-off "*)
        echo "TESSERA-LINUX: powering off"
        poweroff -f
        ;;
esac
n=0
while true; do
    n=$((n + 1))
    echo "TESSERA-LINUX: heartbeat $n"
    sleep 1
done

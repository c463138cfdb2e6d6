//! Cores: their static state, starting the application processors, the hypervisor's signals
//! to a core, and each core's life — run its partition's vCPU or wait.

use super::{memory, partition, PartitionRuntime};
use crate::arch::host_paging::GuardedStacks;
use crate::arch::{self, ap_startup, cpu::CoreDescriptors, x2apic};
use crate::exits::{handle_exit, CoreContext, Flow, Message};
use crate::table::{self, ApicId, CoreIndex, PartitionIndex, CPU_COUNT, MACHINE, PARTITION_COUNT};
use crate::virt::svm::{self, SvmCore, SvmVcpu};
use crate::virt::vmx::{self, VmxCore, VmxVcpu};
use crate::virt::{Backend, Exit, StartState, VirtualCpu};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use static_cell::ConstStaticCell;
use tessera_abi::table::{CacheControl, Partition};

const STACK_SIZE: usize = 64 * 1024;

/// Everything one core owns besides its stack.
#[repr(C, align(4096))]
struct CoreState {
    svm: SvmCore,
    vmx: VmxCore,
    descriptors: CoreDescriptors,
}

/// Each core's state, handed out once to the core with that index.
static CORES: [ConstStaticCell<CoreState>; CPU_COUNT] = [const {
    ConstStaticCell::new(CoreState {
        svm: SvmCore::new(),
        vmx: VmxCore::new(),
        descriptors: CoreDescriptors::new(),
    })
}; CPU_COUNT];

/// The application processors' stacks (the bootstrap core keeps the loader's), each above a
/// guard page the host page tables leave unmapped, handed out once each by the bootstrap
/// core as it starts that core.
static STACKS: GuardedStacks<CPU_COUNT, STACK_SIZE> = GuardedStacks::new();

/// The page under each application processor's stack, for the host page tables.
pub fn stack_guard_pages() -> impl Iterator<Item = u64> {
    STACKS.guard_pages()
}

/// Each partition's permission maps for the backend in use, built once at boot.
static SVM_PERMISSION_MAPS: [ConstStaticCell<svm::PermissionMaps>; PARTITION_COUNT] =
    [const { ConstStaticCell::new(svm::PermissionMaps::new()) }; PARTITION_COUNT];
static VMX_PERMISSION_MAPS: [ConstStaticCell<vmx::PermissionMaps>; PARTITION_COUNT] =
    [const { ConstStaticCell::new(vmx::PermissionMaps::new()) }; PARTITION_COUNT];

/// Each partition's permission maps once built, kept so that a takeover can move port
/// ranges between I/O maps (docs/health.md, "Hot standby"); the lock is taken only at boot and at a
/// takeover, never on an exit.
enum BuiltMaps {
    Svm(&'static mut svm::PermissionMaps),
    Vmx(&'static mut vmx::PermissionMaps),
}

static BUILT_MAPS: [spin::Mutex<Option<BuiltMaps>>; PARTITION_COUNT] =
    [const { spin::Mutex::new(None) }; PARTITION_COUNT];

/// Fills a partition's I/O and MSR permission maps; returns their physical address (the
/// processor reads them from then on; the hypervisor writes them again only at a takeover,
/// see [`set_ports`]).
pub fn build_permission_maps(backend: &Backend, partition: PartitionIndex) -> u64 {
    let ports = partition.partition().ports;
    let (built, address) = match backend {
        Backend::Svm => {
            let maps = SVM_PERMISSION_MAPS[partition.0].take();
            maps.build(ports);
            let address = maps.physical_address();
            (BuiltMaps::Svm(maps), address)
        }
        Backend::Vmx(_) => {
            let maps = VMX_PERMISSION_MAPS[partition.0].take();
            maps.build(ports);
            let address = maps.physical_address();
            (BuiltMaps::Vmx(maps), address)
        }
    };
    *BUILT_MAPS[partition.0].lock() = Some(built);
    address
}

/// Makes the partition's I/O permission map pass the ports of `ranges` through (`pass`)
/// or make them exit, leaving every other bit as it is. Only while no core of the
/// partition is in the guest: the processor reads the map during guest execution, and
/// Intel's manual wants such structures changed only while no logical processor uses them
/// in VMX non-root operation (SDM vol. 3C §25.11.4, "Software Access to Related
/// Structures"); the same discipline is kept for AMD's IOPM (APM vol. 2 §15.10). The
/// takeover guarantees that: the failed partner's cores have stopped, and the standby's
/// boot core, the one calling this, holds the standby's other cores in the hypervisor
/// (`partition::hold_other_cores`).
pub fn set_ports(partition: PartitionIndex, ranges: &[tessera_abi::table::Range], pass: bool) {
    match BUILT_MAPS[partition.0].lock().as_mut() {
        Some(BuiltMaps::Svm(maps)) => maps.set_ports(ranges, pass),
        Some(BuiltMaps::Vmx(maps)) => maps.set_ports(ranges, pass),
        None => {}
    }
}

/// What the bootstrap core prepared for each partition.
pub struct BootPlan {
    pub backend: Backend,
    /// The stage-2 root (nCR3 or EPT pointer).
    pub roots: [u64; PARTITION_COUNT],
    /// The permission maps' physical address.
    pub permission_maps: [u64; PARTITION_COUNT],
    /// Where the boot core starts; None if the partition could not be loaded.
    pub entries: [Option<StartState>; PARTITION_COUNT],
}

static BOOT_PLAN: spin::Once<BootPlan> = spin::Once::new();

pub fn set_boot_plan(plan: BootPlan) {
    BOOT_PLAN.call_once(|| plan);
}

/// Starts every other core of the table: INIT to all at once, then SIPIs one at a time.
pub fn start_application_processors(bsp_index: CoreIndex) {
    ap_startup::install_trampoline();
    let others = || {
        MACHINE
            .cpus
            .iter()
            .enumerate()
            .filter(move |(index, _)| *index != bsp_index.0)
            .map(|(index, &apic_id)| (CoreIndex(index), ApicId(apic_id)))
    };
    if others().next().is_none() {
        return;
    }
    ap_startup::send_init_to_all(others().map(|(_, apic_id)| apic_id));
    for (index, apic_id) in others() {
        let stack_top = STACKS.take(index.0);
        let sent = crate::arch::tsc::read();
        match ap_startup::start(apic_id, index, stack_top) {
            // On hardware some microseconds; under QEMU's -icount mostly the emulator's
            // charge for the core's INIT (docs/benchmarks.md, "Hypervisor boot").
            Some(reported) => log::info!(
                "boot: core {} ran its first 64-bit instruction {} TSC ticks after its start-up IPI",
                apic_id,
                reported.wrapping_sub(sent)
            ),
            None => log::info!("core {} did not start after INIT-SIPI-SIPI", apic_id),
        }
    }
}

/// The life of one core: load its descriptors, then run its partition's vCPU.
pub fn core_main(index: CoreIndex) -> ! {
    arch::host_paging::enter();
    let state = CORES[index.0].take();
    let descriptors = arch::cpu::load(&mut state.descriptors);
    let apic_id = ApicId(MACHINE.cpus[index.0]);
    let Some((partition_index, position)) = table::partition_of_cpu(apic_id) else {
        // A core the table lists but gives to no partition stays with the hypervisor: idle,
        // or watching the partitions' watchdogs.
        super::health::idle_core(apic_id)
    };
    let plan = BOOT_PLAN
        .get()
        .expect("the bootstrap core sets the plan before starting cores");
    let Some(entry) = plan.entries[partition_index.0] else {
        partition::mark_failed(partition_index);
        arch::halt_forever()
    };
    let context = CoreContext {
        apic_id,
        core_index: index,
        partition_index,
        partition: partition_index.partition(),
    };
    // The boot core enters at the boot protocol's entry, once it has loaded the partition;
    // the partition's other cores wait, as an application processor does, for the guest's
    // INIT-SIPI-SIPI.
    let start = if position == 0 {
        let Some(loaded) = load_at_boot(&context, entry) else {
            partition::mark_failed(partition_index);
            arch::halt_forever()
        };
        Some(loaded)
    } else {
        None
    };
    let root = plan.roots[partition_index.0];
    let permission_maps = plan.permission_maps[partition_index.0];
    match plan.backend {
        Backend::Svm => {
            let confinement = svm::Confinement {
                nested_cr3: root,
                permission_maps,
                asid: 1,
                intercept_wbinvd: traps_wbinvd(context.partition),
            };
            let mut vcpu = SvmVcpu::new(&mut state.svm, &confinement);
            run(&mut vcpu, &context, start)
        }
        Backend::Vmx(capabilities) => {
            let confinement = vmx::Confinement {
                ept_pointer: root,
                permission_maps,
                vpid: 1 + index.0 as u16,
                intercept_wbinvd: traps_wbinvd(context.partition),
            };
            match VmxVcpu::new(&mut state.vmx, descriptors, &capabilities, &confinement) {
                Ok(mut vcpu) => run(&mut vcpu, &context, start),
                Err(missing) => {
                    log::info!("core {}: VMX cannot start: {}", apic_id, missing);
                    partition::mark_failed(partition_index);
                    arch::halt_forever()
                }
            }
        }
    }
}

/// Whether the partition's table policy traps WBINVD (`wbinvd = "trap"`, the default).
fn traps_wbinvd(partition: &Partition) -> bool {
    partition.cache_control == CacheControl::Trap
}

/// Runs the vCPU of this core until its partition stops. `start` is where it begins; None
/// means it waits for a start-up IPI first.
fn run(vcpu: &mut impl VirtualCpu, context: &CoreContext, start: Option<StartState>) -> ! {
    let signals = &SIGNALS[context.core_index.0];
    let is_boot_core = start.is_some();
    let mut seen_generation = partition::generation(context.partition_index);
    let mut waiting_for_startup = true;
    if let Some(start) = start {
        vcpu.reset(&start);
        waiting_for_startup = false;
        partition::set_running(context.partition_index);
        super::note_guest_entry(context, start);
        super::note_boot_entry(partitions_loaded_at_boot());
    }
    // Whether the last exit may have brought a signal: a stop, a restart, a message. Every
    // such change reaches a running core with an NMI (`signal`, `partition::signal_cores`),
    // and this core's own handlers that stop or restart its partition return `Flow::Stop`.
    // So where an NMI sent while the core is in the hypervisor always makes the next entry
    // exit (`signals_always_exit`), an exit that was neither an NMI nor a stop goes straight
    // back to the guest: the frequent exits (ICR writes, doorbells, CPUID) do not re-read
    // the partition's state each time.
    let mut look_at_signals = true;
    // Fixed for the core's life: read once, not after every exit.
    let signals_always_exit = vcpu.signals_always_exit();
    loop {
        if look_at_signals {
            if partition::is_stopping(context.partition_index) {
                // Counted, so that a takeover knows every core of a failed primary has
                // left its guest for good before it moves the primary's devices.
                partition::note_core_stopped(context.partition_index);
                // Halts for good unless the partition rejoins as its partner's standby.
                super::health::wait_for_rejoin(context.partition_index);
                continue;
            }
            if context.in_standby_pair() {
                if is_boot_core {
                    super::health::take_over_if_asked(context);
                } else {
                    partition::held_if_asked(context.partition_index);
                }
            }
            let generation = partition::generation(context.partition_index);
            if generation != seen_generation {
                seen_generation = generation;
                let mut restarted = None;
                partition::restart_rendezvous(context, is_boot_core, generation, || {
                    // Every core of the partition is parked here and the new guest has not
                    // started: a message its old guest left is dropped now. Dropping it
                    // after the release instead would race with the new guest's own INIT
                    // and start-up IPIs to a core slow to leave the rendezvous.
                    drop_messages(context.partition);
                    restarted = restart_partition(context);
                });
                // Every core of the partition comes back as from power-on, not only the boot core.
                vcpu.clear_for_restart();
                match restarted {
                    Some(start) => {
                        vcpu.reset(&start);
                        waiting_for_startup = false;
                        super::note_guest_entry(context, start);
                    }
                    None => waiting_for_startup = true,
                }
                continue;
            }
            match signals.take_message() {
                Some(Message::Init) => waiting_for_startup = true,
                Some(Message::StartUp { vector }) if waiting_for_startup => {
                    let start = StartState::StartUp { vector };
                    vcpu.reset(&start);
                    waiting_for_startup = false;
                    super::note_guest_entry(context, start);
                }
                // A start-up IPI to a running core is ignored, as on hardware (SDM §10.4.4.1);
                // guest NMIs never sit in the message slot.
                Some(Message::StartUp { .. }) | Some(Message::GuestNmi) | None => {}
            }
            if waiting_for_startup {
                if arch::can_idle_halt() {
                    signals.halt_until_signalled();
                } else {
                    arch::idle_pause();
                }
                continue;
            }
        }
        let exit = vcpu.run();
        let signalled = matches!(exit, Exit::Nmi);
        // Resume or Stop: a stop or a restart request is seen at the top of the loop.
        let flow = handle_exit(vcpu, exit, context, &PartitionRuntime);
        look_at_signals = signalled || matches!(flow, Flow::Stop) || !signals_always_exit;
    }
}

/// How many partitions the bootstrap core found loadable (each enters its guest at boot).
fn partitions_loaded_at_boot() -> usize {
    BOOT_PLAN
        .get()
        .map_or(0, |plan| plan.entries.iter().flatten().count())
}

/// The first load of a partition, on its own boot core: its RAM cleared, its images copied
/// in. The bootstrap core checked the same load (`LoadStep::CheckOnly`) and found `checked`
/// before starting any core; a load that fails or finds another entry (the image or the
/// table changed in between) is reported as for any failed load. None stops the partition.
fn load_at_boot(context: &CoreContext, checked: StartState) -> Option<StartState> {
    let began = arch::tsc::read();
    let loaded = memory::load_partition(context.partition, 0, memory::LoadStep::ClearAndCopy)
        .and_then(|start| {
            if start == checked {
                Ok(start)
            } else {
                Err(memory::SetupError::EntryChanged)
            }
        });
    match loaded {
        Ok(start) => {
            log::info!(
                "boot: partition={} loaded by core {} in {} TSC ticks ({} KiB of RAM cleared)",
                context.partition.name,
                context.apic_id,
                arch::tsc::read().wrapping_sub(began),
                arch::guest_memory::ram_bytes(context.partition) / 1024
            );
            Some(start)
        }
        Err(error) => {
            memory::report_load_failure(context.partition, context.apic_id, error, "started");
            None
        }
    }
}

/// Reloads a partition for a restart (its cores are parked): its IOAPIC pins masked (and,
/// for a cold restart, reset), its
/// memory cleared and its boot blobs checked and copied in again. None if that fails,
/// which stops the partition.
fn restart_partition(context: &CoreContext) -> Option<StartState> {
    // The pins it holds now: a standby that took over holds its primary's.
    let pins = crate::exits::ioapic::held_pins(context.partition_index);
    crate::exits::ioapic::mask_pins(pins);
    crate::exits::pci::quiesce_partition(context.partition_index);
    // A cold restart also returns the pins' destinations to their power-on value: all the
    // device state the hypervisor can reset today (docs/health.md).
    if super::health::take_cold_restart(context.partition_index) {
        crate::exits::ioapic::reset_pins(pins);
        log::info!(
            "cold restart: partition={} ioapic-pins-reset={}",
            context.partition.name,
            pins.len()
        );
    }
    match memory::load_partition(
        context.partition,
        partition::restarts(context.partition_index) + 1,
        memory::LoadStep::ClearAndCopy,
    ) {
        Ok(start) => Some(start),
        Err(error) => {
            memory::report_load_failure(context.partition, context.apic_id, error, "restarted");
            partition::mark_failed(context.partition_index);
            None
        }
    }
}

/// Empties the message slot of every core of `partition` (its cores are all parked for a
/// restart).
fn drop_messages(partition: &Partition) {
    for &apic_id in partition.cpus {
        if let Some(index) = table::cpu_index(ApicId(apic_id)) {
            SIGNALS[index.0].take_message();
        }
    }
}

/// The hypervisor's signals to one core: a message slot, a count of NMIs the hypervisor
/// sent it (to tell them from the guest's own NMIs), a guest NMI that arrived while
/// the core was in the hypervisor, and whether the core halts waiting for a start-up IPI
/// (which then comes with an NMI, `signal`).
struct CoreSignals {
    message: AtomicU32,
    hypervisor_nmis: AtomicU32,
    guest_nmi_pending: AtomicBool,
    halted_for_startup: AtomicBool,
}

const NO_MESSAGE: u32 = 0;
const MESSAGE_INIT: u32 = 1;
const MESSAGE_STARTUP: u32 = 0x100;

impl CoreSignals {
    const fn new() -> Self {
        Self {
            message: AtomicU32::new(NO_MESSAGE),
            hypervisor_nmis: AtomicU32::new(0),
            guest_nmi_pending: AtomicBool::new(false),
            halted_for_startup: AtomicBool::new(false),
        }
    }

    /// The wait of a core for its start-up IPI, in HLT instead of spinning (on an emulator
    /// a spinning core takes a host CPU from the cores that run: with Linux's second core
    /// spinning through the first one's decompression and early boot, the partition's boot
    /// was measurably slower). Every wake-up comes with an NMI: INIT and state changes
    /// always send one; a start-up IPI sends one when this flag says the core halts. The
    /// flag is set before the last look at the slot, and `signal` stores the message before
    /// it takes the flag (both sequentially consistent), so either this core sees the
    /// message or the sender sees the flag and sends the NMI, which ends the halt even if it
    /// arrives before it (`arch::idle_halt`).
    fn halt_until_signalled(&self) {
        self.halted_for_startup.store(true, Ordering::SeqCst);
        if self.message.load(Ordering::SeqCst) == NO_MESSAGE {
            arch::idle_halt();
        }
        self.halted_for_startup.store(false, Ordering::SeqCst);
    }

    fn take_message(&self) -> Option<Message> {
        // A plain load first: the slot is empty on almost every pass of the run loop, and
        // the locked swap would cost a bus-locked read-modify-write on each exit.
        if self.message.load(Ordering::Acquire) == NO_MESSAGE {
            return None;
        }
        match self.message.swap(NO_MESSAGE, Ordering::AcqRel) {
            NO_MESSAGE => None,
            MESSAGE_INIT => Some(Message::Init),
            value => Some(Message::StartUp {
                vector: value as u8,
            }),
        }
    }

    /// After an NMI exit: whether the guest should receive an NMI (its own, not ours).
    fn guest_nmi_after_exit(&self) -> bool {
        let hypervisor = self.hypervisor_nmis.swap(0, Ordering::AcqRel) > 0;
        let guest = self.guest_nmi_pending.swap(false, Ordering::AcqRel);
        guest || !hypervisor
    }
}

static SIGNALS: [CoreSignals; CPU_COUNT] = [const { CoreSignals::new() }; CPU_COUNT];

/// After an NMI exit on core `core`: whether the guest should receive an NMI.
pub fn guest_nmi_after_exit(core: CoreIndex) -> bool {
    SIGNALS[core.0].guest_nmi_after_exit()
}

/// Leaves `message` for the core and brings it out of the guest with an NMI. Without a
/// message the NMI alone makes the core look at its partition's state.
pub fn signal(apic_id: ApicId, message: Option<Message>) {
    let Some(index) = table::cpu_index(apic_id) else {
        return;
    };
    let signals = &SIGNALS[index.0];
    match message {
        Some(Message::GuestNmi) => {
            signals.guest_nmi_pending.store(true, Ordering::Release);
            x2apic::send_nmi(apic_id);
            return;
        }
        Some(Message::Init) => signals.message.store(MESSAGE_INIT, Ordering::Release),
        // No NMI for a start-up IPI: it matters only to a core waiting for one, and such a
        // core polls its message slot in the hypervisor's idle loop; a running core ignores
        // it (SDM Vol. 3A 10.4.4.1). An NMI here would be a second hypervisor NMI racing the
        // INIT's: operating systems send the second start-up IPI while the core already
        // runs (under TCG arrival takes far longer than the 200 µs they wait), and when one
        // NMI exit accounts for both signals the other NMI, arriving after it, looked like
        // the guest's own and was injected into the core's start-up trampoline, whose IDT
        // is the reset one (the restart-qemu triple faults at rip=0x8048, docs/emulators.md).
        // The exception: a core that halts waiting for it (`halt_until_signalled`), which
        // is in the hypervisor, not running a guest, and gets one NMI per halt.
        Some(Message::StartUp { vector }) => {
            signals
                .message
                .store(MESSAGE_STARTUP | u32::from(vector), Ordering::SeqCst);
            if !signals.halted_for_startup.swap(false, Ordering::SeqCst) {
                return;
            }
        }
        None => {}
    }
    signals.hypervisor_nmis.fetch_add(1, Ordering::AcqRel);
    x2apic::send_nmi(apic_id);
}

/// An NMI taken by the hypervisor itself (not as a VM exit); registered with
/// `arch::cpu::set_nmi_handler` at boot. On SVM this happens only in the instant after an
/// NMI exit when the hypervisor lets the held NMI through; on VMX an NMI arriving while the
/// core is in the hypervisor is delivered here, and the core must still leave the guest
/// promptly after its next entry, so the backend arranges an immediate exit.
pub fn host_nmi() {
    let Some(index) = table::cpu_index(x2apic::current_id()) else {
        return;
    };
    let signals = &SIGNALS[index.0];
    if signals.hypervisor_nmis.load(Ordering::Acquire) == 0 {
        signals.guest_nmi_pending.store(true, Ordering::Release);
    }
    vmx::exit_soon_after_entry();
}

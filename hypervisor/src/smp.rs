//! Cores: their static state, starting the application processors (INIT-SIPI-SIPI, Intel
//! SDM vol. 3 §10.4.4), and each core's life — run its partition's vCPU or wait.

use crate::arch::{self, cpu::CoreDescriptors, tsc, x2apic};
use crate::partition;
use crate::table::{self, CPU_COUNT, MACHINE, PARTITION_COUNT};
use crate::virt::svm::{self, SvmCore, SvmVcpu};
use crate::virt::vmx::{self, VmxCore, VmxVcpu};
use crate::virt::{handle_exit, Backend, CoreContext, Flow, StartState, VirtualCpu};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tessera_abi::table::Partition;
use tessera_loader::{ApStartParameters, AP_TRAMPOLINE_ADDRESS};

const STACK_SIZE: usize = 64 * 1024;

/// Everything one core owns.
#[repr(C, align(4096))]
struct CoreState {
    svm: SvmCore,
    vmx: VmxCore,
    descriptors: CoreDescriptors,
    stack: [u8; STACK_SIZE],
}

struct CoreSlot {
    state: UnsafeCell<CoreState>,
    claimed: AtomicBool,
}

// SAFETY: each slot's state is handed out once (`claimed`), to the core with that index;
// the bootstrap core only takes the address of an AP's stack before that AP runs.
unsafe impl Sync for CoreSlot {}

static CORES: [CoreSlot; CPU_COUNT] = [const {
    CoreSlot {
        state: UnsafeCell::new(CoreState {
            svm: SvmCore::new(),
            vmx: VmxCore::new(),
            descriptors: CoreDescriptors::new(),
            stack: [0; STACK_SIZE],
        }),
        claimed: AtomicBool::new(false),
    }
}; CPU_COUNT];

/// This core's own state; each index can be claimed once.
fn claim(index: usize) -> &'static mut CoreState {
    let slot = &CORES[index];
    assert!(
        !slot.claimed.swap(true, Ordering::AcqRel),
        "core slot {index} claimed twice"
    );
    // SAFETY: the flag above makes this the only reference ever handed out for the slot.
    unsafe { &mut *slot.state.get() }
}

static SVM_PERMISSION_MAPS: [svm::PermissionMapsCell; PARTITION_COUNT] =
    [const { svm::PermissionMapsCell(UnsafeCell::new(svm::PermissionMaps::new())) };
        PARTITION_COUNT];
static VMX_PERMISSION_MAPS: [vmx::PermissionMapsCell; PARTITION_COUNT] =
    [const { vmx::PermissionMapsCell(UnsafeCell::new(vmx::PermissionMaps::new())) };
        PARTITION_COUNT];

/// Fills a partition's I/O and MSR permission maps (bootstrap core, before other cores run).
pub fn build_permission_maps(backend: &Backend, index: usize, partition: &Partition) {
    match backend {
        Backend::Svm => {
            // SAFETY: only the bootstrap core runs during boot (PermissionMapsCell's contract).
            let maps = unsafe { &mut *SVM_PERMISSION_MAPS[index].0.get() };
            maps.build(partition.ports);
        }
        Backend::Vmx(_) => {
            // SAFETY: as above.
            let maps = unsafe { &mut *VMX_PERMISSION_MAPS[index].0.get() };
            maps.build(partition.ports);
        }
    }
}

/// What the bootstrap core prepared for each partition: stage-2 root and entry point.
struct BootPlan {
    backend: Backend,
    roots: [u64; PARTITION_COUNT],
    entries: [Option<StartState>; PARTITION_COUNT],
}

static BOOT_PLAN: spin::Once<BootPlan> = spin::Once::new();

pub fn set_boot_plan(
    backend: Backend,
    roots: [u64; PARTITION_COUNT],
    entries: [Option<StartState>; PARTITION_COUNT],
) {
    BOOT_PLAN.call_once(|| BootPlan {
        backend,
        roots,
        entries,
    });
}

/// Starts every other core of the table, one at a time.
pub fn start_application_processors(bsp_index: usize) {
    let trampoline = tessera_loader::ap_trampoline();
    // SAFETY: the page at AP_TRAMPOLINE_ADDRESS is below 1 MiB, identity-mapped, and given to
    // no partition (validation reserves it); no AP runs yet, so nothing else uses it.
    let target = unsafe {
        core::slice::from_raw_parts_mut(AP_TRAMPOLINE_ADDRESS as *mut u8, trampoline.len())
    };
    target.copy_from_slice(trampoline);
    let parameters = (AP_TRAMPOLINE_ADDRESS as usize + tessera_loader::ap_parameters_offset())
        as *mut ApStartParameters;

    // INIT every application processor at once and wait the 10 ms of the universal start-up
    // algorithm once (SDM vol. 3 §9.4.4.1); then start them one at a time, since they share
    // the trampoline's parameter block.
    let others = || {
        MACHINE
            .cpus
            .iter()
            .enumerate()
            .filter(move |(index, _)| *index != bsp_index)
    };
    for (_, &apic_id) in others() {
        x2apic::send_init(apic_id);
    }
    tsc::delay_microseconds(10_000);
    for (index, &apic_id) in others() {
        let stack_top = {
            // Only the address is taken: the AP owns the stack from the moment it starts.
            let state = CORES[index].state.get();
            // SAFETY: `state` points into a static; addr_of! creates no reference.
            let stack = unsafe { core::ptr::addr_of!((*state).stack) } as u64;
            stack + STACK_SIZE as u64
        };
        // SAFETY: the parameter block lies inside the trampoline copied above; the previous
        // AP has finished reading it (we waited for `started`).
        unsafe {
            parameters.write_volatile(ApStartParameters {
                stack_top,
                cpu_index: index as u64,
                started: 0,
            });
        }
        let vector = (AP_TRAMPOLINE_ADDRESS >> 12) as u8;
        x2apic::send_startup(apic_id, vector);
        tsc::delay_microseconds(200);
        x2apic::send_startup(apic_id, vector);
        let start = tsc::read();
        let budget = tsc::khz().max(1_000_000) * 1000; // about a second
                                                       // SAFETY: as above; `started` is written by the AP, hence the volatile read.
        while unsafe { core::ptr::addr_of!((*parameters).started).read_volatile() } == 0 {
            if tsc::read().wrapping_sub(start) > budget {
                log::info!("core {} did not start after INIT-SIPI-SIPI", apic_id);
                break;
            }
            arch::pause();
        }
    }
}

/// The life of one core: load its descriptors, then run its partition's vCPU.
pub fn core_main(index: usize) -> ! {
    let state = claim(index);
    let descriptors = arch::cpu::load(&mut state.descriptors);
    let apic_id = MACHINE.cpus[index];
    let Some((partition_index, position)) = table::partition_of_cpu(apic_id) else {
        // A core the table lists but gives to no partition stays with the hypervisor, idle.
        arch::halt_forever()
    };
    let partition = &MACHINE.partitions[partition_index];
    let plan = BOOT_PLAN
        .get()
        .expect("the bootstrap core sets the plan before starting cores");
    let Some(entry) = plan.entries[partition_index] else {
        partition::mark_failed(partition_index);
        arch::halt_forever()
    };
    let context = CoreContext {
        apic_id,
        core_index: index,
        partition_index,
        partition,
    };
    // The boot core enters at the PVH entry; the partition's other cores wait, as an
    // application processor does, for the guest's INIT-SIPI-SIPI.
    let start = (position == 0).then_some(entry);
    let root = plan.roots[partition_index];
    // The permission maps were filled during boot and are never written again; only their
    // physical address is taken here.
    match plan.backend {
        Backend::Svm => {
            let confinement = svm::Confinement {
                nested_cr3: root,
                permission_maps: SVM_PERMISSION_MAPS[partition_index].0.get() as u64,
                asid: 1,
            };
            let mut vcpu = SvmVcpu::new(&mut state.svm, &confinement);
            run(&mut vcpu, &context, start)
        }
        Backend::Vmx(capabilities) => {
            let confinement = vmx::Confinement {
                ept_pointer: root,
                permission_maps: VMX_PERMISSION_MAPS[partition_index].0.get() as u64,
                vpid: 1 + index as u16,
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

/// Runs the vCPU of this core until its partition stops. `start` is where it begins; None
/// means it waits for a start-up IPI first.
fn run(vcpu: &mut impl VirtualCpu, context: &CoreContext, start: Option<StartState>) -> ! {
    let signals = &SIGNALS[context.core_index];
    let is_boot_core = start.is_some();
    let mut seen_generation = partition::generation(context.partition_index);
    let mut waiting_for_startup = true;
    if let Some(start) = start {
        vcpu.reset(&start);
        waiting_for_startup = false;
        partition::set_running(context.partition_index);
        crate::note_guest_entry(context.partition.name, context.apic_id, start);
    }
    loop {
        if partition::is_stopping(context.partition_index) {
            arch::halt_forever();
        }
        let generation = partition::generation(context.partition_index);
        if generation != seen_generation {
            seen_generation = generation;
            let mut restarted = None;
            partition::restart_rendezvous(context, is_boot_core, generation, || {
                restarted = restart_partition(context);
            });
            signals.take_message();
            match restarted {
                Some(start) => {
                    vcpu.reset(&start);
                    waiting_for_startup = false;
                    crate::note_guest_entry(context.partition.name, context.apic_id, start);
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
                crate::note_guest_entry(context.partition.name, context.apic_id, start);
            }
            // A start-up IPI to a running core is ignored, as on hardware (SDM §10.4.4.1).
            Some(Message::StartUp { .. }) | None => {}
        }
        if waiting_for_startup {
            arch::pause();
            continue;
        }
        let exit = vcpu.run();
        match handle_exit(vcpu, exit, context) {
            Flow::Resume => {}
            // Stopped for good, or a restart was requested: the loop's top decides.
            Flow::Stop => {}
        }
    }
}

/// Reloads a partition for a restart (its cores are parked): its IOAPIC pins masked, its
/// memory cleared and its boot blobs checked and copied in again. None if that fails,
/// which stops the partition.
fn restart_partition(context: &CoreContext) -> Option<StartState> {
    crate::ioapic_emulation::mask_pins(context.partition.irq_pins);
    match crate::memory::load_partition(
        context.partition,
        partition::restarts(context.partition_index) + 1,
    ) {
        Ok(start) => Some(start),
        Err(error) => {
            log::info!(
                "contained: partition={} core={} reason=load address=0x0 rip=0x0 ({}); not restarted",
                context.partition.name,
                context.apic_id,
                error
            );
            partition::mark_failed(context.partition_index);
            None
        }
    }
}

/// What one core asks another to do to its vCPU (INIT and SIPI, emulated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    Init,
    StartUp { vector: u8 },
}

/// The hypervisor's signals to one core: a message slot, a count of NMIs the hypervisor
/// sent it (to tell them from the guest's own NMIs), and a guest NMI that arrived while
/// the core was in the hypervisor.
pub struct CoreSignals {
    message: AtomicU32,
    hypervisor_nmis: AtomicU32,
    guest_nmi_pending: AtomicBool,
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
        }
    }

    fn take_message(&self) -> Option<Message> {
        match self.message.swap(NO_MESSAGE, Ordering::AcqRel) {
            NO_MESSAGE => None,
            MESSAGE_INIT => Some(Message::Init),
            value => Some(Message::StartUp {
                vector: value as u8,
            }),
        }
    }

    /// After an NMI exit: whether the guest should receive an NMI (its own, not ours).
    pub fn guest_nmi_after_exit(&self) -> bool {
        let hypervisor = self.hypervisor_nmis.swap(0, Ordering::AcqRel) > 0;
        let guest = self.guest_nmi_pending.swap(false, Ordering::AcqRel);
        guest || !hypervisor
    }
}

static SIGNALS: [CoreSignals; CPU_COUNT] = [const { CoreSignals::new() }; CPU_COUNT];

pub fn signals(core_index: usize) -> &'static CoreSignals {
    &SIGNALS[core_index]
}

/// Leaves `message` for the core and brings it out of the guest with an NMI. Without a
/// message the NMI alone makes the core look at its partition's state.
pub fn signal(apic_id: u32, message: Option<Message>) {
    let Some(index) = table::cpu_index(apic_id) else {
        return;
    };
    let signals = &SIGNALS[index];
    if let Some(message) = message {
        let value = match message {
            Message::Init => MESSAGE_INIT,
            Message::StartUp { vector } => MESSAGE_STARTUP | u32::from(vector),
        };
        signals.message.store(value, Ordering::Release);
    }
    signals.hypervisor_nmis.fetch_add(1, Ordering::AcqRel);
    x2apic::send_nmi(apic_id);
}

/// An NMI taken by the hypervisor itself (not as a VM exit). On SVM this happens only in
/// the instant after an NMI exit when the hypervisor lets the held NMI through; on VMX an
/// NMI arriving while the core is in the hypervisor is delivered here, and the core must
/// still leave the guest promptly after its next entry, so the backend arranges an
/// immediate exit.
pub fn host_nmi() {
    let apic_id = x2apic::current_id();
    let Some(index) = table::cpu_index(apic_id) else {
        return;
    };
    let signals = &SIGNALS[index];
    if signals.hypervisor_nmis.load(Ordering::Acquire) == 0 {
        signals.guest_nmi_pending.store(true, Ordering::Release);
    }
    vmx::exit_soon_after_entry();
}

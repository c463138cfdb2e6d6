//! Cores: their static state, starting the application processors (INIT-SIPI-SIPI, Intel
//! SDM vol. 3 §10.4.4), and each core's life — run its partition's vCPU or wait.

use crate::arch::{self, cpu::CoreDescriptors, tsc, x2apic};
use crate::partition;
use crate::table::{self, CPU_COUNT, MACHINE, PARTITION_COUNT};
use crate::virt::svm::{self, SvmCore, SvmVcpu};
use crate::virt::vmx::{self, VmxCore, VmxVcpu};
use crate::virt::{handle_exit, Backend, CoreContext, Flow, VirtualCpu};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
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
    entries: [Option<u64>; PARTITION_COUNT],
}

static BOOT_PLAN: spin::Once<BootPlan> = spin::Once::new();

pub fn set_boot_plan(
    backend: Backend,
    roots: [u64; PARTITION_COUNT],
    entries: [Option<u64>; PARTITION_COUNT],
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

    for (index, &apic_id) in MACHINE.cpus.iter().enumerate() {
        if index == bsp_index {
            continue;
        }
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
        x2apic::send_init(apic_id);
        tsc::delay_microseconds(10_000);
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

/// The life of one core: load its descriptors, then run its partition's vCPU or wait.
pub fn core_main(index: usize) -> ! {
    let state = claim(index);
    let descriptors = arch::cpu::load(&mut state.descriptors);
    let apic_id = MACHINE.cpus[index];
    let Some((partition_index, position)) = table::partition_of_cpu(apic_id) else {
        // A core the table lists but gives to no partition stays with the hypervisor, idle.
        arch::halt_forever()
    };
    let partition = &MACHINE.partitions[partition_index];
    if position != 0 {
        // A partition's further cores wait for the guest's INIT-SIPI-SIPI (a later issue
        // emulates it); until then they stay parked, as an AP does before its SIPI.
        arch::halt_forever()
    }
    let plan = BOOT_PLAN
        .get()
        .expect("the bootstrap core sets the plan before starting cores");
    let Some(entry) = plan.entries[partition_index] else {
        partition::mark_failed(partition_index);
        arch::halt_forever()
    };
    let context = CoreContext {
        apic_id,
        partition_index,
        partition,
    };
    let root = plan.roots[partition_index];
    let start_info = crate::memory::START_INFO_GUEST_ADDRESS;
    // The permission maps were filled during boot and are never written again; only their
    // physical address is taken here.
    match plan.backend {
        Backend::Svm => {
            let start = svm::GuestStart {
                rip: entry,
                rbx: start_info,
                nested_cr3: root,
                permission_maps: SVM_PERMISSION_MAPS[partition_index].0.get() as u64,
                asid: 1,
            };
            let mut vcpu = SvmVcpu::new(&mut state.svm, &start);
            enter(&mut vcpu, &context, entry)
        }
        Backend::Vmx(capabilities) => {
            let start = vmx::GuestStart {
                rip: entry,
                rbx: start_info,
                ept_pointer: root,
                permission_maps: VMX_PERMISSION_MAPS[partition_index].0.get() as u64,
                vpid: 1 + index as u16,
            };
            match VmxVcpu::new(&mut state.vmx, descriptors, &capabilities, &start) {
                Ok(mut vcpu) => enter(&mut vcpu, &context, entry),
                Err(missing) => {
                    log::info!("core {}: VMX cannot start: {}", apic_id, missing);
                    partition::mark_failed(partition_index);
                    arch::halt_forever()
                }
            }
        }
    }
}

fn enter(vcpu: &mut impl VirtualCpu, context: &CoreContext, entry: u64) -> ! {
    partition::set_running(context.partition_index);
    crate::note_guest_entry(context.partition.name, context.apic_id, entry);
    run(vcpu, context)
}

fn run(vcpu: &mut impl VirtualCpu, context: &CoreContext) -> ! {
    loop {
        if partition::is_stopping(context.partition_index) {
            arch::halt_forever();
        }
        let exit = vcpu.run();
        match handle_exit(vcpu, exit, context) {
            Flow::Resume => {}
            Flow::Stop => arch::halt_forever(),
        }
    }
}

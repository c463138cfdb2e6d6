//! The hypercall interface: how a guest asks the hypervisor for something.
//!
//! A guest issues `VMMCALL` (AMD) or `VMCALL` (Intel) — the guest runtime tries the one
//! the CPUID vendor names — with the call number in RAX and arguments in RDI, RSI, RDX.
//! The result comes back in RAX: a non-negative value on success, or a negative
//! [`Error`] code. A call from a partition that lacks the needed capability fails with
//! [`Error::Denied`]; it never stops the caller.

/// CPUID leaf of the hypervisor signature, in the 0x4000_0000 range that hypervisors
/// share by convention: EAX = highest hypervisor leaf, EBX:ECX:EDX = [`SIGNATURE`].
pub const CPUID_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// The 12 signature bytes in EBX, ECX, EDX order.
pub const SIGNATURE: [u8; 12] = *b"Tessera\0\0\0\0\0";

/// Call numbers (RAX).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Stop the calling partition on all of its cores. RDI = exit status (reported).
    /// Does not return.
    StopSelf = 1,
    /// Power the machine off. Needs the `power` capability. Does not return on success.
    PowerOff = 2,
    /// State of partition RDI (index in table order) as a [`PartitionState`].
    /// Needs `stats:<that partition>`.
    PartitionState = 3,
    /// Number of partitions in the table. Always allowed.
    PartitionCount = 4,
    /// Ring the doorbell of channel RDI (index in table order): the channel's vector is
    /// raised as a fixed interrupt on the boot core of every other member partition that
    /// runs. Needs membership of the channel. Returns the number of partitions signalled.
    RingDoorbell = 5,
    /// Guest-physical base address of channel RDI's shared memory in the caller's address
    /// space. Needs membership of the channel.
    ChannelAddress = 6,
    /// The doorbell vector of channel RDI. Needs membership of the channel.
    ChannelVector = 7,
    /// Exits the calling partition has caused so far, all cores and reasons, this call
    /// included. Always allowed: a partition may watch its own overhead.
    OwnExitCount = 8,
    /// Declare a fatal error of the calling partition (RDI = a code of the guest's own,
    /// logged): the health monitor raises `declared-fatal` and acts on it. Returns 0 only
    /// when the partition's policy for it is `log`; otherwise does not return.
    DeclareFatal = 9,
    /// Tell the watchdog the partition is alive. The first call arms the watchdog; from then
    /// on a period without a call raises `watchdog-expiry`. Returns the period in
    /// microseconds (0: the partition has no watchdog, the call does nothing).
    Heartbeat = 10,
    /// Health log of partition RDI (index in table order): how often event RSI (index of
    /// `tessera_abi::table::HealthEvent`) has happened to it, over all its restarts; with
    /// RSI = [`HEALTH_LOG_RESTARTS`], how often it has been restarted. Needs
    /// `health:<that partition>` unless it asks about itself.
    HealthLog = 11,
    /// The caller's place in its hot-standby pair (docs/health.md, "Hot standby"):
    /// [`STANDBY_WAITING`] while it is a standby that holds none of the pair's devices,
    /// [`STANDBY_ACTIVE`] otherwise (it holds them, or it is in no pair). A guest that may
    /// boot in either role (`rejoin-as-standby`) asks this at boot. Always allowed.
    StandbyStatus = 12,
}

/// [`Call::StandbyStatus`]: the caller holds its devices (or is in no pair).
pub const STANDBY_ACTIVE: i64 = 0;
/// [`Call::StandbyStatus`]: the caller is a standby waiting for its takeover vector.
pub const STANDBY_WAITING: i64 = 1;

/// The [`Call::HealthLog`] selector for the partition's restart count.
pub const HEALTH_LOG_RESTARTS: u64 = 0x100;

impl Call {
    pub fn from_number(number: u64) -> Option<Call> {
        Some(match number {
            1 => Call::StopSelf,
            2 => Call::PowerOff,
            3 => Call::PartitionState,
            4 => Call::PartitionCount,
            5 => Call::RingDoorbell,
            6 => Call::ChannelAddress,
            7 => Call::ChannelVector,
            8 => Call::OwnExitCount,
            9 => Call::DeclareFatal,
            10 => Call::Heartbeat,
            11 => Call::HealthLog,
            12 => Call::StandbyStatus,
            _ => return None,
        })
    }
}

/// What a partition table says about calls (`user-hypercalls`) and what the hypervisor checks
/// a call from guest user mode against (`tessera_abi::table::Partition::user_hypercalls`).
impl Call {
    /// Every call, in number order.
    pub const ALL: [Call; 12] = [
        Call::StopSelf,
        Call::PowerOff,
        Call::PartitionState,
        Call::PartitionCount,
        Call::RingDoorbell,
        Call::ChannelAddress,
        Call::ChannelVector,
        Call::OwnExitCount,
        Call::DeclareFatal,
        Call::Heartbeat,
        Call::HealthLog,
        Call::StandbyStatus,
    ];

    /// The call's bit in a mask of calls: bit n stands for the call numbered n.
    pub const fn bit(self) -> u64 {
        1 << (self as u64)
    }

    /// The call's name in a partition table: its variant name in kebab-case.
    pub const fn name(self) -> &'static str {
        match self {
            Call::StopSelf => "stop-self",
            Call::PowerOff => "power-off",
            Call::PartitionState => "partition-state",
            Call::PartitionCount => "partition-count",
            Call::RingDoorbell => "ring-doorbell",
            Call::ChannelAddress => "channel-address",
            Call::ChannelVector => "channel-vector",
            Call::OwnExitCount => "own-exit-count",
            Call::DeclareFatal => "declare-fatal",
            Call::Heartbeat => "heartbeat",
            Call::HealthLog => "health-log",
            Call::StandbyStatus => "standby-status",
        }
    }

    /// Whether a partition table may grant the call to guest user mode (CPL > 0). Calls that
    /// act on the whole machine ([`Call::PowerOff`]) or on the whole partition
    /// ([`Call::StopSelf`], [`Call::DeclareFatal`]) never come from user mode: only the
    /// partition's kernel may make them. A heartbeat may come from a user-mode process (the
    /// one whose liveness the watchdog is to prove).
    pub const fn grantable_to_user_mode(self) -> bool {
        !matches!(self, Call::StopSelf | Call::PowerOff | Call::DeclareFatal)
    }
}

// Every call number has a bit in a `u64` mask.
const _: () = {
    let mut index = 0;
    while index < Call::ALL.len() {
        assert!((Call::ALL[index] as u64) < 64);
        index += 1;
    }
};

/// What [`Call::PartitionState`] returns.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionState {
    /// Not started yet (its cores are still coming up).
    Starting = 0,
    Running = 1,
    /// Stopped itself through [`Call::StopSelf`].
    Stopped = 2,
    /// Stopped by the hypervisor after a fault (containment).
    Faulted = 3,
}

impl PartitionState {
    pub fn from_number(number: u64) -> Option<PartitionState> {
        Some(match number {
            0 => PartitionState::Starting,
            1 => PartitionState::Running,
            2 => PartitionState::Stopped,
            3 => PartitionState::Faulted,
            _ => return None,
        })
    }
    /// Whether the partition will run no more guest code.
    pub fn is_final(self) -> bool {
        matches!(self, PartitionState::Stopped | PartitionState::Faulted)
    }
}

/// Negative results (RAX = -(code)).
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    UnknownCall = -1,
    Denied = -2,
    InvalidArgument = -3,
    /// A doorbell rung beyond the channel's `doorbell-budget`: dropped and counted.
    OverBudget = -4,
}

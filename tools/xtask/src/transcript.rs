//! Everything one emulator run printed, by source, and how the emulator ended.

use crate::markers::{self, Marker};

/// The label of the hypervisor console's lines.
pub const HYPERVISOR: &str = "hv";
/// The label of the emulator's own output (its error messages).
pub const EMULATOR: &str = "qemu";

/// One line of output: `source` is a partition's name, [`HYPERVISOR`] or [`EMULATOR`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptLine {
    pub source: String,
    pub text: String,
}

/// How the emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatorExit {
    /// It exited by itself with this status.
    Exited(i32),
    /// A signal ended it that the runner did not send.
    Signalled,
    /// The runner stopped it when the time bound ran out.
    TimedOut { seconds: u64 },
    /// The runner stopped it shortly after the hypervisor panicked.
    StoppedAfterPanic,
}

impl std::fmt::Display for EmulatorExit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmulatorExit::Exited(status) => write!(formatter, "QEMU exited with status {status}"),
            EmulatorExit::Signalled => write!(formatter, "QEMU was killed by a signal"),
            EmulatorExit::TimedOut { seconds } => write!(formatter, "timed out after {seconds} s"),
            EmulatorExit::StoppedAfterPanic => {
                write!(formatter, "QEMU was stopped after the hypervisor panicked")
            }
        }
    }
}

/// The whole output of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub lines: Vec<TranscriptLine>,
    pub emulator_exit: EmulatorExit,
}

impl Transcript {
    /// The lines one source printed, in order.
    pub fn lines_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter(move |line| line.source == source)
            .map(|line| line.text.as_str())
    }

    /// The markers on the hypervisor console, in order.
    pub fn markers(&self) -> impl Iterator<Item = Marker> + '_ {
        self.lines_of(HYPERVISOR).filter_map(markers::parse)
    }
}

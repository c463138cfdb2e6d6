//! Everything one emulator run printed, by source, and how the emulator ended.

use std::path::PathBuf;

use crate::markers::{self, Marker};

/// The label of the hypervisor console's lines.
pub const HYPERVISOR: &str = "hv";

/// One line of output: `source` is a partition's name, [`HYPERVISOR`] or the emulator's label
/// (`qemu`, `bochs`: its own messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptLine {
    pub source: String,
    pub text: String,
}

/// How the emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatorExit {
    /// It exited by itself with this status (before the power-off marker, for an emulator
    /// whose exit status means nothing).
    Exited(i32),
    /// A signal ended it that the runner did not send.
    Signalled,
    /// The runner stopped it when the time bound ran out.
    TimedOut { seconds: u64 },
    /// The runner stopped it shortly after the hypervisor panicked or refused to start.
    StoppedAfterPanic,
    /// The hypervisor powered the machine off and the emulator ended, by itself or stopped by
    /// the runner (Bochs: its exit status is always 1 and it may not act on ACPI power-off).
    PoweredOff,
    /// The emulator should exit by itself on power-off but was still running this many
    /// seconds after the power-off marker; the runner stopped it.
    StillRunningAfterPowerOff { seconds: u64 },
    /// The user (Ctrl-C) or a supervisor (SIGTERM, SIGHUP) interrupted the run.
    Interrupted,
    /// The hypervisor announced a machine reset (a health action). `took_effect`: the
    /// emulator then exited by itself (QEMU with `-no-reboot` turns the reset into an exit)
    /// or booted the hypervisor again (Bochs; the runner stops it at the new banner); false
    /// when neither happened within the grace.
    MachineReset { took_effect: bool },
}

impl EmulatorExit {
    /// Whether the run ended the way a correct run ends: the machine switched off.
    pub fn is_clean_power_off(self) -> bool {
        matches!(self, EmulatorExit::Exited(0) | EmulatorExit::PoweredOff)
    }

    /// The exit in words, naming the emulator (`QEMU`, `Bochs`).
    pub fn describe(self, emulator: &str) -> String {
        match self {
            EmulatorExit::Exited(status) => format!("{emulator} exited with status {status}"),
            EmulatorExit::Signalled => format!("{emulator} was killed by a signal"),
            EmulatorExit::TimedOut { seconds } => format!("timed out after {seconds} s"),
            EmulatorExit::StoppedAfterPanic => {
                format!("{emulator} was stopped after the hypervisor panicked or refused")
            }
            EmulatorExit::PoweredOff => format!("{emulator} powered off"),
            EmulatorExit::StillRunningAfterPowerOff { seconds } => {
                format!("{emulator} was still running {seconds} s after the power-off marker")
            }
            EmulatorExit::Interrupted => "interrupted".into(),
            EmulatorExit::MachineReset { took_effect: true } => {
                format!("{emulator}'s machine was reset by the hypervisor")
            }
            EmulatorExit::MachineReset { took_effect: false } => format!(
                "{emulator}: the hypervisor announced a machine reset, but the machine neither \
                 exited nor booted again"
            ),
        }
    }
}

/// The whole output of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The emulator's name for messages (`QEMU`, `Bochs`).
    pub emulator: &'static str,
    pub lines: Vec<TranscriptLine>,
    pub emulator_exit: EmulatorExit,
    /// Each captured UART's file, with whose output it is, in port order (COM1 first).
    pub uart_files: Vec<(String, PathBuf)>,
}

impl TranscriptLine {
    /// A line `source` printed (test fixtures).
    #[cfg(test)]
    pub fn new(source: &str, text: &str) -> Self {
        TranscriptLine {
            source: source.into(),
            text: text.into(),
        }
    }
}

impl Transcript {
    /// A QEMU run that printed `lines` and exited cleanly (test fixtures).
    #[cfg(test)]
    pub fn qemu(lines: Vec<TranscriptLine>) -> Self {
        Transcript {
            emulator: "QEMU",
            lines,
            emulator_exit: EmulatorExit::Exited(0),
            uart_files: Vec::new(),
        }
    }

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

    /// How the emulator ended, in words.
    pub fn describe_exit(&self) -> String {
        self.emulator_exit.describe(self.emulator)
    }
}

/// Test support shared by the transcript checks' tests.
#[cfg(test)]
pub mod test_lines {
    use super::{EmulatorExit, Transcript, TranscriptLine};

    /// A transcript of `emulator` holding `lines` (console, text) that ended with `exit`.
    pub fn transcript(
        emulator: &'static str,
        lines: &[(&str, &str)],
        exit: EmulatorExit,
    ) -> Transcript {
        Transcript {
            emulator,
            uart_files: vec![],
            lines: lines
                .iter()
                .map(|(source, text)| TranscriptLine {
                    source: source.to_string(),
                    text: text.to_string(),
                })
                .collect(),
            emulator_exit: exit,
        }
    }

    /// `lines` (console, text) with the first line whose text contains `old` replaced by
    /// `new`; panics when there is none, so a test cannot silently check nothing.
    pub fn replaced(
        mut lines: Vec<(&'static str, &'static str)>,
        old: &str,
        new: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        let index = lines
            .iter()
            .position(|(_, text)| text.contains(old))
            .unwrap_or_else(|| panic!("no line with {old:?}"));
        lines[index].1 = new;
        lines
    }
}

//! Starting an emulator so that it can be stopped completely, and noticing Ctrl-C.
//!
//! An emulator is started in a process group of its own, and dies with the runner
//! (`PR_SET_PDEATHSIG`). Stopping it kills every process group found under it, so a helper
//! that moved to a session of its own — Bochs under `script` gets a new session on the
//! pseudo-terminal — goes too. SIGINT, SIGTERM and SIGHUP only raise a flag that the run
//! loop reads; it then stops the emulator and the runner exits with status 130.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Set by the signal handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interruption(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set the flag [`interrupted`] reads instead of ending the
/// runner at once (which would leave the emulator's helpers behind).
pub fn catch_interruptions() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let handler: extern "C" fn(libc::c_int) = note_interruption;
            libc::signal(signal, handler as usize as libc::sighandler_t);
        }
    }
}

/// Whether the user or a supervisor asked the runner to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Starts `command` in a new process group that is killed when the runner dies.
pub fn spawn_group(command: &mut Command) -> std::io::Result<Child> {
    command.process_group(0);
    // SAFETY: between fork and exec the closure calls only prctl and getppid, both
    // async-signal-safe, and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The runner may have died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("the runner is gone"));
            }
            Ok(())
        })
    };
    command.spawn()
}

/// `(pid, parent pid, process group)` from the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<(i32, i32, i32)> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    // The command name is in parentheses and may contain spaces or parentheses itself.
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let _state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((pid, parent, group))
}

/// Every process as `(pid, parent pid, process group)`.
fn processes() -> Vec<(i32, i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_name().to_str()?.parse::<i32>().ok()?;
            let text = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            parse_stat(&text)
        })
        .collect()
}

/// The process groups of `root` and of every process below it.
pub fn groups_below(root: i32, processes: &[(i32, i32, i32)]) -> BTreeSet<i32> {
    let mut members = vec![root];
    let mut groups = BTreeSet::from([root]);
    let mut next = 0;
    while next < members.len() {
        let parent = members[next];
        for &(pid, process_parent, group) in processes {
            if process_parent == parent && !members.contains(&pid) {
                members.push(pid);
                groups.insert(group);
            }
        }
        next += 1;
    }
    groups
}

/// Kills `child` and everything it started (SIGKILL to each process group below it), then
/// reaps it. Does nothing harmful if it has exited already.
pub fn stop_group(child: &mut Child) -> Result<()> {
    let root = child.id() as i32;
    // Descendants are collected while the child still holds them: once it dies they are
    // handed to init and can no longer be told apart.
    let groups = groups_below(root, &processes());
    for group in &groups {
        // SAFETY: kill has no memory-safety preconditions; the groups are the child's own
        // (its group id is its pid, as spawn_group made it) or ones found below it.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    child.wait().context("cannot wait for the emulator")?;
    // A process of another group may outlive the kill for a moment; wait until the groups
    // are empty so that nothing is left running when the runner returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let alive = processes()
            .iter()
            .any(|(_, _, group)| groups.contains(group));
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn reads_stat_lines_with_awkward_names() {
        assert_eq!(
            parse_stat("1682 (bochs-bin) R 1680 1682 1682 34817 1682 4194304"),
            Some((1682, 1680, 1682))
        );
        assert_eq!(
            parse_stat("77 (a (weird) name) S 1 77 77 0 -1"),
            Some((77, 1, 77))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_the_groups_of_all_descendants() {
        let table = [
            (10, 1, 10),  // the emulator's helper (script), leading its group
            (11, 10, 11), // bochs in a session of its own
            (12, 11, 11), // a thread-like child in bochs' group
            (13, 1, 13),  // unrelated
            (14, 13, 10), // unrelated parent, same group number: not found by descent
        ];
        assert_eq!(groups_below(10, &table), BTreeSet::from([10, 11]));
    }

    #[test]
    fn stopping_kills_a_grandchild_in_another_session() {
        // sh starts `setsid sleep` (a new session, as script does for bochs) and waits.
        let mut command = Command::new("sh");
        command
            .args(["-c", "setsid sleep 300 & echo $!; wait"])
            .stdout(Stdio::piped());
        let mut child = spawn_group(&mut command).expect("sh starts");
        let mut stdout = child.stdout.take().unwrap();
        let mut text = String::new();
        let mut byte = [0u8; 1];
        while std::io::Read::read(&mut stdout, &mut byte).unwrap() == 1 && byte[0] != b'\n' {
            text.push(byte[0] as char);
        }
        let grandchild: i32 = text.trim().parse().expect("sh prints the pid");
        // Wait until setsid has exec'd sleep in its new session.
        let stat = format!("/proc/{grandchild}/stat");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !std::fs::read_to_string(&stat).is_ok_and(|text| text.contains("(sleep)"))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_group(&mut child).unwrap();
        let left = std::fs::read_to_string(&stat)
            .ok()
            .filter(|text| !text.contains(") Z "));
        assert!(left.is_none(), "the grandchild survived: {left:?}");
    }
}

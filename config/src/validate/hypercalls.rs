//! User-mode hypercalls: `user-hypercalls` names calls that exist, each once, and never one
//! that acts on the whole partition or the whole machine.

use std::collections::HashMap;

use tessera_abi::hypercall::Call;

use super::Rule;
use crate::diagnostics::Finding;
use crate::model::Table;
use crate::source::Span;

/// The call a `user-hypercalls` entry names.
pub(crate) fn call_named(name: &str) -> Option<Call> {
    Call::ALL.into_iter().find(|call| call.name() == name)
}

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let known: Vec<&str> = Call::ALL.iter().map(|call| call.name()).collect();
    for partition in &table.partitions {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for name in &partition.user_hypercalls {
            let Some(call) = call_named(name) else {
                let finding = Finding::new(
                    Rule::UserHypercallUnknown,
                    name.span,
                    format!(
                        "partition `{}` grants hypercall `{}` to user mode, but there is no such hypercall",
                        *partition.name, **name
                    ),
                )
                .label("no such hypercall");
                findings.push(match crate::schema::did_you_mean(name, &known) {
                    Some(suggestion) => finding.hint(format!("did you mean `{suggestion}`?")),
                    None => finding.hint(format!(
                        "the hypercalls are {}",
                        known
                            .iter()
                            .map(|known| format!("`{known}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                });
                continue;
            };
            if let Some(&earlier) = seen.get(name.as_str()) {
                findings.push(
                    Finding::new(
                        Rule::UserHypercallDuplicate,
                        name.span,
                        format!(
                            "partition `{}` lists user hypercall `{}` twice",
                            *partition.name, **name
                        ),
                    )
                    .label("again")
                    .related(earlier, "first listed here"),
                );
                continue;
            }
            seen.insert(name.as_str(), name.span);
            if !call.grantable_to_user_mode() {
                let reach = match call {
                    Call::PowerOff => "powers off the whole machine",
                    Call::StopSelf => "stops the whole partition, every core of it",
                    Call::DeclareFatal => {
                        "declares the whole partition failed (its health policy may halt or restart it)"
                    }
                    _ => "acts beyond the calling program",
                };
                findings.push(
                    Finding::new(
                        Rule::UserHypercallPrivileged,
                        name.span,
                        format!(
                            "partition `{}` grants `{}` to user mode, but it {reach}",
                            *partition.name, **name
                        ),
                    )
                    .label("never from user mode")
                    .hint(format!(
                        "only the partition's kernel may make `{}`; a user program asks its kernel, which decides",
                        **name
                    )),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_named_and_found_by_its_name() {
        for call in Call::ALL {
            assert_eq!(call_named(call.name()), Some(call));
            assert_eq!(Call::from_number(call as u64), Some(call));
        }
        assert_eq!(call_named("RingDoorbell"), None);
    }

    #[test]
    fn only_stop_self_power_off_and_declare_fatal_are_kept_from_user_mode() {
        let kept: Vec<Call> = Call::ALL
            .into_iter()
            .filter(|call| !call.grantable_to_user_mode())
            .collect();
        assert_eq!(kept, [Call::StopSelf, Call::PowerOff, Call::DeclareFatal]);
    }
}

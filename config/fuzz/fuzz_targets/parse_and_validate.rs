//! Arbitrary bytes as partition-table text: parsing, validation, rendering and lowering must
//! never panic; a table the validator accepts must give every partition a memory map the
//! stage-2 planner accepts; the schema pass must foresee every deserialization error; and
//! whatever the fast parse accepts on its own, the reference parse (toml_edit) accepts as
//! the same model, spans included; and lexed in pieces cut before every table header, the
//! fast parse reads the same model or refuses the table.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_config::{
    check_text, memory_map, parse_fast_only, parse_fast_only_in_pieces, parse_reference, FileChecks,
    Table, SCHEMA_GAP,
};
use tessera_policy::stage2::check_mappings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fast_only = parse_fast_only(Path::new("fuzz.toml"), text.to_owned());
    if let Some(in_pieces) = parse_fast_only_in_pieces(Path::new("fuzz.toml"), text.to_owned(), 1) {
        match &fast_only {
            Some(whole) => assert_eq!(model(&in_pieces), model(whole), "the pieces differ"),
            None => panic!("the fast parse accepts a table only in pieces"),
        }
    }
    if let Some(fast) = fast_only {
        match parse_reference(Path::new("fuzz.toml"), text.to_owned()) {
            Ok(reference) => assert_eq!(model(&fast), model(&reference), "the parses differ"),
            Err(diagnostics) => panic!(
                "the fast parse accepts a table the reference parse refuses: {}",
                diagnostics.summary()
            ),
        }
    }
    match check_text(Path::new("fuzz.toml"), text.to_owned(), FileChecks::Skip) {
        Ok(table) => {
            for index in 0..table.partitions.len() {
                let map = memory_map(&table, index);
                if let Err(error) = check_mappings(&map) {
                    panic!("a valid table gives partition {index} an invalid stage-2 plan: {error:?} {map:?}");
                }
            }
        }
        Err(diagnostics) => {
            std::hint::black_box(diagnostics.render());
            std::hint::black_box(diagnostics.to_json());
            if let Some(finding) = diagnostics
                .findings
                .iter()
                .find(|finding| finding.message.starts_with(SCHEMA_GAP))
            {
                panic!("the schema pass missed: {}", finding.message);
            }
        }
    }
});

/// The parsed model with its spans, as text (the name index prints in no fixed order).
fn model(table: &Table) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        table.platform, table.hypervisor, table.partitions, table.channels, table.run
    )
}

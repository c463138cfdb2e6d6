//! The `tessera` tool end to end: exit codes, human and JSON findings, `show` and `graph`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tessera::{run, Outcome};

fn config_corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/corpus")
        .join(path)
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../partitions/demo.toml")
}

fn tessera(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Outcome {
    let mut all = vec![OsString::from("tessera")];
    all.extend(args.iter().map(|arg| arg.as_ref().to_os_string()));
    run(all)
}

#[test]
fn check_exit_codes() {
    let valid = config_corpus("valid/touching.toml");
    let invalid = config_corpus("invalid/memory-overlap.toml");
    let unreadable = config_corpus("invalid/table-unreadable.toml");
    assert_eq!(tessera(&[&"check", &"--no-files", &valid]).code, 0);
    assert_eq!(tessera(&[&"check", &"--no-files", &demo()]).code, 0);
    let outcome = tessera(&[&"check", &"--no-files", &valid, &invalid]);
    assert_eq!(outcome.code, 1);
    assert!(
        outcome.stderr.contains("[memory-overlap] Error"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stdout.contains("ok: "), "{}", outcome.stdout);
    assert_eq!(tessera(&[&"check", &invalid, &unreadable]).code, 2);
    assert_eq!(tessera(&[&"check", &"/nonexistent/table.toml"]).code, 2);
    assert_eq!(tessera(&[&"check"]).code, 2, "no table is a usage error");
    assert_eq!(tessera(&[&"check", &"--format", &"xml", &valid]).code, 2);
    assert_eq!(tessera(&[&"--help"]).code, 0);
}

#[test]
fn check_with_files_finds_missing_images() {
    let outcome = tessera(&[&"check", &config_corpus("invalid/boot-file-missing.toml")]);
    assert_eq!(outcome.code, 1);
    assert!(
        outcome.stderr.contains("[boot-file-missing]"),
        "{}",
        outcome.stderr
    );
    let outcome = tessera(&[&"check", &config_corpus("valid/with-images.toml")]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
}

#[test]
fn json_has_the_same_findings() {
    let invalid = config_corpus("invalid/several-problems.toml");
    let outcome = tessera(&[&"check", &"--no-files", &"--format", &"json", &invalid]);
    assert_eq!(outcome.code, 1);
    let document: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(document["valid"], false);
    let findings = document["tables"][0]["findings"].as_array().unwrap();
    let human = tessera(&[&"check", &"--no-files", &invalid]);
    let headlines = human.stderr.matches("] Error: ").count();
    assert_eq!(findings.len(), headlines);
    let overlap = findings
        .iter()
        .find(|finding| finding["rule"] == "core-shared")
        .unwrap();
    assert!(overlap["line"].as_u64().unwrap() > 0);
    assert!(overlap["related"]["line"].as_u64().unwrap() > 0);
    assert!(overlap["hint"].is_string());
}

#[test]
fn show_prints_the_memory_map() {
    let outcome = tessera(&[&"show", &config_corpus("valid/touching.toml")]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let text = outcome.stdout;
    assert!(
        text.contains("memory map (host-physical, sorted):"),
        "{text}"
    );
    assert!(text.contains("[0x100000, 0x1000000)"), "{text}");
    assert!(
        text.contains("channel `between`, shared by left, right"),
        "{text}"
    );
    assert!(text.contains("(gap)"), "{text}");
    let invalid = tessera(&[&"show", &config_corpus("invalid/core-shared.toml")]);
    assert_eq!(invalid.code, 1);
}

#[test]
fn graph_writes_an_svg() {
    let output = std::env::temp_dir().join(format!("tessera-graph-{}.svg", std::process::id()));
    let outcome = tessera(&[
        &"graph",
        &config_corpus("valid/same-owner-aliases.toml"),
        &"-o",
        &output,
    ]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let svg = std::fs::read_to_string(&output).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("url(#channel0)"));
    let _ = std::fs::remove_file(output);
}

//! The command line, black box: config check, exit codes, `check --json`,
//! and `serve` on the embedded defaults.

#[path = "common/binary.rs"]
mod binary;

use binary::{BIN, Serve};
use std::process::Command;

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_the_effective_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(dir.path(), &["config", "check"]);
    assert_eq!(code, 0);
    let parsed = sipsentry::config::Config::from_toml(&stdout).expect("printed config loads back");
    assert_eq!(parsed.sip.next_hop, "sip:127.0.0.1:5080");
    assert!(stdout.contains("token_env = \"SIPSENTRY_ADMIN_TOKEN\""));
}

#[test]
fn config_errors_exit_2_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[policy]\nreject_code = 404\n").unwrap();
    let (code, _, stderr) = run(dir.path(), &["config", "check", "-c", "bad.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("policy.reject_code"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line cause: {stderr}");

    std::fs::write(dir.path().join("typo.toml"), "[sip]\nlissen = \"x\"\n").unwrap();
    let (code, _, stderr) = run(dir.path(), &["serve", "-c", "typo.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("lissen"), "{stderr}");

    let (code, _, stderr) = run(dir.path(), &["config", "check", "-c", "missing.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let (code, _, _) = run(dir.path(), &["frobnicate"]);
    assert_eq!(code, 2, "usage errors exit 2");
}

#[test]
fn check_json_explains_a_denylisted_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        "[policy]\ndeny = [\"+1666*\"]\n",
    )
    .unwrap();
    let (code, stdout, _) = run(dir.path(), &["check", "(666) 555-0100", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["e164"], "+16665550100");
    assert_eq!(v["action"], "reject");
    assert_eq!(v["rule"], "denylist");
    assert_eq!(v["score"], 100);
    assert_eq!(v["evidence"][0]["source"], "denylist");
    assert_eq!(v["evidence"][0]["raw"]["entry"], "+1666*");
    let (_, human, _) = run(dir.path(), &["check", "+18005550100"]);
    assert!(human.contains("decision pass (rule: allowlist"), "{human}");
}

#[test]
fn serve_runs_on_embedded_defaults_and_stops_cleanly_on_sigterm() {
    // The defaults listen on 127.0.0.1:5060; no config file in this directory.
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[], "127.0.0.1:5060".parse().unwrap());
    assert!(serve.terminate().success());
}

#[test]
fn serve_on_a_busy_port_exits_1_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // Held for the whole test: the port is busy by construction, not by luck.
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("p.toml"),
        format!("[sip]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let (code, _, stderr) = run(dir.path(), &["serve", "-c", "p.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot listen") && stderr.contains("in use"),
        "{stderr}"
    );
}

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
    assert_eq!(parsed.sip.next_hop.uris(), ["sip:127.0.0.1:5080"]);
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

/// `config check` refuses what `serve` would refuse before binding, each
/// with exit 2 and the key: a provider's missing secret, an admin API open
/// to the network, a next hop that does not resolve, thresholds that can
/// never fire, a listen address without a port.
#[test]
fn config_check_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[providers.didchecks]\nenabled = true\ntoken_env = \"SIPSENTRY_TEST_NO_SUCH_TOKEN\"\n",
            "providers.didchecks.token_env",
        ),
        (
            "[admin]\nlisten = \"0.0.0.0:8080\"\ntoken_env = \"SIPSENTRY_TEST_NO_SUCH_TOKEN\"\n",
            "admin.listen",
        ),
        (
            "[sip]\nnext_hop = \"sip:pbx.invalid:5060\"\n",
            "sip.next_hop",
        ),
        ("[policy]\ntag_at = 95\n", "policy.reject_at"),
        ("[sip]\nlisten = \"0.0.0.0\"\n", "0.0.0.0:5060"),
    ];
    for (text, key) in cases {
        std::fs::write(dir.path().join("c.toml"), text).unwrap();
        let (code, _, stderr) = run(dir.path(), &["config", "check", "-c", "c.toml"]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn config_example_prints_every_key_and_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let (code, example, _) = run(dir.path(), &["config", "example"]);
    assert_eq!(code, 0);
    for key in [
        "listen = ",
        "max_held_mb = ",
        "token_env = ",
        "status_unflagged = ",
    ] {
        assert!(example.contains(key), "{key} missing from\n{example}");
    }
    std::fs::write(dir.path().join("example.toml"), &example).unwrap();
    let (code, effective, stderr) = run(dir.path(), &["config", "check", "-c", "example.toml"]);
    assert_eq!(code, 0, "{stderr}");
    // An empty file beside it: the same data paths, resolved against the
    // same directory.
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let (_, defaults, _) = run(dir.path(), &["config", "check", "-c", "empty.toml"]);
    assert_eq!(effective, defaults, "the example is the defaults");
}

#[test]
fn data_paths_follow_the_config_file_and_a_missing_cache_is_said() {
    let (home, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = home.path().join("s.toml");
    std::fs::write(
        &config,
        "[hiya_cache]\ndir = \"data/hiya\"\n[history]\npath = \"data/history.db\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let file = elsewhere.path().join("in.tsv.gz");
    std::fs::write(&file, sipsentry::reputation::hiya_cache::sample::DEMO_IN).unwrap();
    // Run from another directory: the data goes beside the config file.
    let (code, _, stderr) = run(
        elsewhere.path(),
        &[
            "cache",
            "import",
            "in.tsv.gz",
            "--country",
            "IN",
            "-c",
            config,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(home.path().join("data/hiya/IN/current").exists());
    let (code, out, stderr) = run(
        elsewhere.path(),
        &["check", "+919000000002", "--json", "-c", config],
    );
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "tag", "{v}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // Without the config nothing is found, and that is said.
    let (code, out, stderr) = run(elsewhere.path(), &["check", "+919000000002", "--json"]);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("warning: no Hiya cache under sipsentry-data/hiya"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "pass");
}

/// `serve` with `log.format = "json"` writes one JSON object per line, one
/// of them per screened call with what an operator needs; `log.decisions
/// = false` leaves the per-call line out; the text format has the same
/// line, fields as `name=value`.
#[test]
fn serve_logs_one_line_per_decided_call_as_json_or_text() {
    for (format, decisions) in [("json", true), ("json", false), ("text", true)] {
        let dir = tempfile::tempdir().unwrap();
        let (sip, admin) = (binary::free_port(), binary::free_port());
        let pbx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std::fs::write(
            dir.path().join("s.toml"),
            format!(
                "[sip]\nlisten = \"127.0.0.1:{sip}\"\nnext_hop = \"sip:{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [history]\nenabled = false\n[log]\nformat = \"{format}\"\ndecisions = {decisions}\n",
                pbx.local_addr().unwrap()
            ),
        )
        .unwrap();
        let listen: std::net::SocketAddr = format!("127.0.0.1:{sip}").parse().unwrap();
        let serve = Serve::start(dir.path(), &["-c", "s.toml"], listen);
        let uac = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        uac.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let me = uac.local_addr().unwrap();
        let invite = format!(
            "INVITE sip:+15551234567@pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKlog\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+919000000002@carrier.example>;tag=1\r\n\
             To: <sip:+15551234567@pbx.example>\r\nCall-ID: log-line@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        uac.send_to(invite.as_bytes(), listen).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = uac.recv_from(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"SIP/2.0 100"));
        let pid = serve.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let (status, stderr) = serve.wait_with_stderr();
        assert!(status.success(), "{stderr}");
        if format == "text" {
            let screened: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains(" INFO sipsentry::decisions: call screened "))
                .collect();
            assert_eq!(screened.len(), 1, "{stderr}");
            assert!(
                screened[0].contains(
                    " call_id=log-line@test caller=\"+919000000002\" called=+15551234567 action=\"tag\" rule=\"threshold\" score=75 us="
                ) && screened[0].contains(" decision="),
                "{stderr}"
            );
            continue;
        }
        let events: Vec<serde_json::Value> = stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(events.len() > 2, "{stderr}");
        let screened: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["message"] == "call screened")
            .collect();
        if !decisions {
            assert!(screened.is_empty(), "{stderr}");
            continue;
        }
        assert_eq!(screened.len(), 1, "{stderr}");
        let e = screened[0];
        assert_eq!(e["level"], "INFO");
        assert_eq!(e["call_id"], "log-line@test");
        assert_eq!(e["caller"], "+919000000002");
        assert_eq!(e["called"], "+15551234567");
        assert_eq!(e["action"], "tag", "the demo cache's SPAM caller: {e}");
        assert_eq!(e["rule"], "threshold");
        assert_eq!(e["score"], 75);
        assert!(e["us"].is_u64() && e["decision"].is_string(), "{e}");
    }
}

/// `serve` started from another directory with `-c DIR/s.toml` keeps its
/// history and Hiya cache beside that config.
#[test]
fn serve_from_another_directory_keeps_its_data_beside_the_config() {
    let (home, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sip, admin) = (binary::free_port(), binary::free_port());
    let config = home.path().join("s.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{sip}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [hiya_cache]\ndir = \"data/hiya\"\n[history]\npath = \"data/history.db\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{sip}").parse().unwrap();
    let serve = Serve::start(elsewhere.path(), &["-c", config], listen);
    let uac = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    uac.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let me = uac.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:+15551234567@pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKwhere\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+919000000001@carrier.example>;tag=1\r\n\
         To: <sip:+15551234567@pbx.example>\r\nCall-ID: where@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    uac.send_to(invite.as_bytes(), listen).unwrap();
    let mut buf = [0u8; 2048];
    let mut codes = Vec::new();
    while let Ok((n, _)) = uac.recv_from(&mut buf) {
        let code: u16 = String::from_utf8_lossy(&buf[8..11]).parse().unwrap_or(0);
        codes.push(code);
        if code >= 200 {
            break;
        }
        let _ = n;
    }
    assert_eq!(
        codes.last(),
        Some(&603),
        "the demo cache's FRAUD caller: {codes:?}"
    );
    assert!(serve.terminate().success());
    assert!(home.path().join("data/hiya/IN/current").exists());
    assert!(home.path().join("data/history.db").exists());
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing written where serve was started"
    );
    let (code, out, stderr) = run(
        elsewhere.path(),
        &["history", "--format", "json", "-c", config],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["call_id"], "where@test", "{rows}");
}

#[test]
fn serve_with_a_next_hop_that_does_not_resolve_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[sip]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"sip:pbx.invalid:5060\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(dir.path(), &["serve", "-c", "c.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sip.next_hop"), "{stderr}");
}

/// Every argument and option of every command says what it is for.
#[test]
fn every_argument_has_help_text() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &["serve"],
        &["check"],
        &["bench"],
        &["cache", "import"],
        &["cache", "sync"],
        &["cache", "status"],
        &["bulk"],
        &["history"],
        &["config", "check"],
        &["config", "example"],
    ];
    for command in commands {
        // `-h`: the summary, one line an argument.
        let mut args = command.to_vec();
        args.push("-h");
        let (code, help, _) = run(dir.path(), &args);
        assert_eq!(code, 0, "{command:?}");
        for line in help.lines().filter(|l| l.starts_with("  ")) {
            // "  -c, --config <CONFIG>  Config file …" or "  <NUMBER>  The caller …"
            // The second column, when there is one, is the help; clap's
            // "[default: …]" alone is not.
            let parts: Vec<&str> = line
                .trim_start()
                .split("  ")
                .filter(|part| !part.trim().is_empty())
                .collect();
            let described = parts.len() > 1 && !parts[1].trim_start().starts_with('[');
            assert!(described, "{command:?}: no help for {line:?}");
        }
    }
}

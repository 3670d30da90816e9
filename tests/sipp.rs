//! SIPp (Debian's `sip-tester`) against the real binary: a full call flow at
//! a few hundred calls per second, and denylisted callers getting the
//! configured reject code. Under CI=true a missing `sipp` is a failure.

#[path = "common/binary.rs"]
mod binary;

use binary::{Serve, free_port, sipp_counts as counts};
use std::process::{Command, Output, Stdio};

fn sipp() -> Option<&'static str> {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "sipp is not installed (.ci/run installs sip-tester)"
        );
        eprintln!("skipping: sipp not installed (apt-get install sip-tester)");
        return None;
    }
    Some("sipp")
}

fn run_sipp(args: &[&str]) -> Output {
    Command::new("sipp")
        .args(args)
        .arg("-nostdin")
        .stdin(Stdio::null())
        .output()
        .expect("run sipp")
}

fn write_config(dir: &std::path::Path, proxy: u16, uas: u16, policy: &str) {
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{proxy}\"\nnext_hop = \"sip:127.0.0.1:{uas}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[policy]\n{policy}"
    );
    std::fs::write(dir.join("sipsentry.toml"), cfg).unwrap();
}

#[test]
fn sipp_call_flow_at_300_calls_per_second_has_no_failed_calls() {
    let Some(sipp) = sipp() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (proxy, uas, uac) = (free_port(), free_port(), free_port());
    write_config(dir.path(), proxy, uas, "");
    let mut uas_child = Command::new(sipp)
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas.to_string(),
            "-nostdin",
            "-mp",
            &free_port().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serve = Serve::start(
        dir.path(),
        &[],
        format!("127.0.0.1:{proxy}").parse().unwrap(),
    );
    let out = run_sipp(&[
        "-sn",
        "uac",
        &format!("127.0.0.1:{proxy}"),
        "-i",
        "127.0.0.1",
        "-p",
        &uac.to_string(),
        "-r",
        "300",
        "-m",
        "1500",
        "-mp",
        &free_port().to_string(),
        "-timeout",
        "60s",
    ]);
    let _ = uas_child.kill();
    let _ = uas_child.wait();
    assert_eq!(
        counts(&out),
        (1500, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success());
    assert!(serve.terminate().success(), "serve must exit 0 on SIGTERM");
}

#[test]
fn sipp_denylisted_callers_get_the_configured_reject_code() {
    let Some(sipp) = sipp() else { return };
    for code in ["603", "486"] {
        let dir = tempfile::tempdir().unwrap();
        let (proxy, uas, uac) = (free_port(), free_port(), free_port());
        write_config(
            dir.path(),
            proxy,
            uas,
            &format!("deny = [\"+1666*\"]\nreject_code = {code}\n"),
        );
        let scenario = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sipp/uac_denied.xml"
        ))
        .unwrap()
        .replace("REJECT_CODE", code);
        let path = dir.path().join("uac_denied.xml");
        std::fs::write(&path, scenario).unwrap();
        let serve = Serve::start(
            dir.path(),
            &[],
            format!("127.0.0.1:{proxy}").parse().unwrap(),
        );
        let out = Command::new(sipp)
            .args([
                "-sf",
                path.to_str().unwrap(),
                &format!("127.0.0.1:{proxy}"),
                "-i",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &uac.to_string(),
                "-r",
                "200",
                "-m",
                "400",
                "-mp",
                &free_port().to_string(),
            ])
            .args(["-timeout", "60s", "-nostdin"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            counts(&out),
            (400, 0),
            "reject {code}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(serve.terminate().success());
    }
}

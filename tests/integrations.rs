//! docs/integrations/kamailio.cfg for real: SIPp calls through Debian's
//! Kamailio, dispatching to sipsentry, which relays to a SIPp UAS. A
//! denylisted caller gets sipsentry's 603 through Kamailio; a clean call
//! completes. Under CI=true a missing `kamailio` or `sipp` is a failure.

#[path = "common/binary.rs"]
mod binary;

use binary::{Killed, Serve, free_port, installed, kamailio_dispatcher, sipp_counts as counts};
use std::process::{Command, Stdio};

#[test]
fn kamailio_dispatches_to_sipsentry_and_relays_its_603() {
    if !installed("kamailio", "kamailio") || !installed("sipp", "sip-tester") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (kamailio, proxy, uas) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{proxy}\"\nnext_hop = \"sip:127.0.0.1:{uas}\"\nrecord_route = true\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[policy]\ndeny = [\"+1666*\"]\nreject_code = 603\n"
        ),
    )
    .unwrap();
    // A UAS that keeps the Record-Route (SIPp's built-in one does not).
    let uas_scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uas_routed.xml");
    let _uas = Killed(
        Command::new("sipp")
            .args([
                "-sf",
                uas_scenario,
                "-i",
                "127.0.0.1",
                "-p",
                &uas.to_string(),
            ])
            .args(["-mp", &free_port().to_string(), "-nostdin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let serve = Serve::start(
        dir.path(),
        &[],
        format!("127.0.0.1:{proxy}").parse().unwrap(),
    );
    let kam = kamailio_dispatcher(
        dir.path(),
        kamailio,
        &[format!("127.0.0.1:{proxy}").parse().unwrap()],
    );
    let target = format!("127.0.0.1:{kamailio}");
    // Denylisted callers: sipsentry's 603, relayed by Kamailio.
    let scenario = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sipp/uac_denied.xml"
    ))
    .unwrap()
    .replace("REJECT_CODE", "603");
    let path = dir.path().join("uac_denied.xml");
    std::fs::write(&path, scenario).unwrap();
    let sipp = |args: &[&str]| {
        Command::new("sipp")
            .args(args)
            .args([&target, "-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-mp", &free_port().to_string(), "-r", "50", "-m", "50"])
            .args(["-timeout", "30s", "-nostdin"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let denied = sipp(&["-sf", path.to_str().unwrap()]);
    assert_eq!(
        counts(&denied),
        (50, 0),
        "{}",
        String::from_utf8_lossy(&denied.stdout)
    );
    // Clean callers: the whole call, INVITE to BYE, the in-dialog requests
    // along the Record-Route of both proxies.
    let routed = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uac_routed.xml");
    let clean = sipp(&["-sf", routed]);
    assert_eq!(
        counts(&clean),
        (50, 0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    drop(kam);
    assert!(serve.terminate().success());
}

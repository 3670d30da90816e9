//! The deploy kit in dist/, each piece checked by the tool it is for: the
//! systemd unit by `systemd-analyze verify`, the alert rules by `promtool
//! check rules`, the sample config by `config check`, and every metric the
//! Grafana dashboard queries against the `/metrics` of a running proxy.
//! Outside CI a missing tool skips its check with a message; under
//! `CI=true` it fails.

#[path = "common/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};
use std::process::Command;

fn dist(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(file)
}

fn have(tool: &str, package: &str) -> bool {
    binary::installed(tool, package)
}

#[test]
fn the_systemd_unit_verifies() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    // The unit as installed, but pointing at the binary just built.
    let unit = std::fs::read_to_string(dist("sipsentry.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/sipsentry serve"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipsentry.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/sipsentry", env!("CARGO_BIN_EXE_sipsentry")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for must in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=sipsentry",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(must), "the unit lacks {must}");
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    if !have("promtool", "prometheus") {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dist("alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container image's recipe keeps to its promises: built in one stage
/// and run from another, as a user that is not root, with the config and
/// the data as volumes, serving the sample config, stopped by SIGTERM.
/// (Where a Docker daemon is available `.ci/run` builds and runs it too.)
#[test]
fn the_dockerfile_runs_the_proxy_as_a_plain_user_with_volumes() {
    let text = std::fs::read_to_string(dist("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("FROM ")).count(), 2);
    let user = lines.iter().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    assert!(lines.contains(&r#"VOLUME ["/etc/sipsentry", "/var/lib/sipsentry"]"#));
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    assert!(lines.contains(&"COPY dist/sipsentry.toml /etc/sipsentry/sipsentry.toml"));
    assert!(lines.contains(&r#"CMD ["serve", "-c", "/etc/sipsentry/sipsentry.toml"]"#));
    // The config it serves keeps its data in the data volume.
    let config = std::fs::read_to_string(dist("sipsentry.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    for (section, key) in [
        ("hiya_cache", "dir"),
        ("history", "path"),
        ("history", "spool_path"),
    ] {
        let path = config[section][key].as_str().unwrap();
        assert!(
            path.starts_with("/var/lib/sipsentry/"),
            "{section}.{key} = {path}"
        );
    }
}

#[test]
fn the_sample_config_passes_config_check() {
    let out = Command::new(binary::BIN)
        .args(["config", "check", "-c"])
        .arg(dist("sipsentry.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `sipsentry_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sipsentry_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_string());
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard = std::fs::read_to_string(dist("grafana-dashboard.json")).unwrap();
    let wanted = metric_names(&dashboard);
    assert!(wanted.len() > 20, "{wanted:?}");
    let dir = tempfile::tempdir().unwrap();
    let (sip, admin) = (binary::free_port(), binary::free_port());
    std::fs::write(
        dir.path().join("s.toml"),
        format!("[sip]\nlisten = \"127.0.0.1:{sip}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{sip}").parse().unwrap();
    let serve = binary::Serve::start(dir.path(), &["-c", "s.toml"], listen);
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serve.terminate();
    // A family is exported when the text declares it; a query may name a
    // counter by its `_total` and a histogram by its `_bucket`.
    let declared: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            !declared.contains(family.trim_end_matches("_total")) && !declared.contains(*name)
        })
        .collect();
    assert!(missing.is_empty(), "not in /metrics: {missing:?}\n{text}");
}

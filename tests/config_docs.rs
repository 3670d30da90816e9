//! docs/configuration.md lists every key the code accepts, with the
//! default the code has: a key added, renamed or re-defaulted in the code
//! without the document fails here.

use std::collections::BTreeMap;

use sipsentry::config::Config;

/// `section.key` → value, from the defaults as the code serializes them.
/// An empty table (a map with no entries) is a value of its own.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// `section.key` → default text, from the document's tables under
/// ``## `[section]` `` headings.
fn documented() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md");
    let mut out = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        if let Some(s) = line
            .strip_prefix("## `[")
            .and_then(|s| s.strip_suffix("]`"))
        {
            section = Some(s.to_string());
            continue;
        }
        if line.starts_with("## ") {
            section = None;
        }
        let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let key = cells[0].trim_end_matches('`');
        let default = cells
            .get(1)
            .and_then(|d| d.strip_prefix('`'))
            .and_then(|d| d.strip_suffix('`'))
            .unwrap_or_else(|| panic!("{section}.{key}: the default must be in backticks"));
        let dotted = format!("{section}.{key}");
        assert!(
            out.insert(dotted.clone(), default.to_string()).is_none(),
            "{dotted} is documented twice"
        );
    }
    out
}

#[test]
fn every_config_key_is_documented_with_its_default() {
    let mut actual = BTreeMap::new();
    flatten(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut actual,
    );
    let docs = documented();
    let missing: Vec<_> = actual.keys().filter(|k| !docs.contains_key(*k)).collect();
    let unknown: Vec<_> = docs.keys().filter(|k| !actual.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "not documented: {missing:?}; documented but not accepted by the code: {unknown:?}"
    );
    for (key, text) in &docs {
        let parsed: toml::Table = format!("v = {text}")
            .parse()
            .unwrap_or_else(|e| panic!("{key}: default {text} is not TOML: {e}"));
        assert_eq!(
            &parsed["v"], &actual[key],
            "{key}: documented default {text}, the code's is {}",
            actual[key]
        );
    }
}

#[test]
fn the_documented_defaults_load_as_a_config_file() {
    // Every documented default, written out as a file, is accepted as is.
    let mut by_section: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, text) in documented() {
        let (section, name) = key.rsplit_once('.').unwrap();
        by_section
            .entry(section.to_string())
            .or_default()
            .push(format!("{name} = {text}"));
    }
    let file: String = by_section
        .iter()
        .map(|(s, lines)| format!("[{s}]\n{}\n", lines.join("\n")))
        .collect();
    let loaded = Config::from_toml(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
    assert_eq!(loaded.to_toml(), Config::default().to_toml());
}

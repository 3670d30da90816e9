//! `sipsentry config example`: a configuration file to start from, made
//! from the key tables of docs/configuration.md (built into the binary),
//! which `tests/config_docs.rs` holds equal to the code.

const DOC: &str = include_str!("../../docs/configuration.md");

/// Every key under its section, each with its meaning as a comment and its
/// default as the value.
pub fn example() -> String {
    let mut out = String::from(
        "# sipsentry configuration: every key with its default.\n\
         # Remove what you do not change; secrets go in the environment\n\
         # variables the *_env keys name, never in this file.\n",
    );
    for line in DOC.lines() {
        if let Some(section) = line
            .strip_prefix("## `[")
            .and_then(|s| s.strip_suffix("]`"))
        {
            out.push_str(&format!("\n[{section}]\n"));
            continue;
        }
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = row.splitn(3, " | ").collect();
        let [key, default, meaning] = cells[..] else {
            continue;
        };
        let key = key.trim_end_matches('`');
        let default = default.trim_matches('`');
        let meaning = meaning.trim_end_matches('|').trim().replace('`', "");
        out.push_str(&format!("# {meaning}\n{key} = {default}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_loads_and_is_the_defaults() {
        let text = example();
        let loaded =
            super::super::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(loaded.to_toml(), super::super::Config::default().to_toml());
        assert!(text.contains("[providers.didchecks]\n"), "{text}");
        assert!(text.contains("# the PBX"), "{text}");
    }
}

//! The README's configuration table lists every setting the node has, with the right
//! environment variable and default.

use kademlia::Settings;
use serde_json::Value;

#[test]
fn readme_configuration_table_matches_the_settings() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let Value::Object(defaults) = serde_json::to_value(Settings::default()).unwrap() else {
        panic!()
    };
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .filter(|cells: &Vec<String>| cells.len() > 4 && defaults.contains_key(&cells[1]))
        .collect();
    for (name, default) in &defaults {
        let row = rows
            .iter()
            .find(|r| &r[1] == name)
            .unwrap_or_else(|| panic!("README has no row for setting {name}"));
        let env = if name == "remote_host" {
            "P2P_REMOTE_HOST".to_string()
        } else {
            format!("KADEMLIA_{}", name.to_uppercase())
        };
        assert_eq!(row[2], env, "environment variable of {name}");
        let documented = row[3].as_str();
        let actual = match default {
            Value::String(s) if s.is_empty() => "empty".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(documented, actual, "default of {name}");
    }
    assert_eq!(
        rows.len(),
        defaults.len(),
        "README lists settings the node does not have"
    );
}

//! `--set key.path=value` overrides applied to a recipe's YAML tree.

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

/// Applies one `key.path=value` override; the value is read as YAML (numbers, booleans, lists).
pub fn apply_override(root: &mut Value, item: &str) -> Result<()> {
    let (path, raw) = item
        .split_once('=')
        .with_context(|| format!("--set {item}: expected key.path=value"))?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        bail!("--set {item}: `{path}` is not a key path like optimizer.lr");
    }
    let value: Value = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
    };
    let mut node = root;
    let keys: Vec<&str> = path.split('.').collect();
    for (i, key) in keys.iter().enumerate() {
        if !node.is_mapping() {
            if node.is_null() {
                *node = Value::Mapping(Mapping::new());
            } else {
                bail!("--set {item}: `{}` is not a section", keys[..i].join("."));
            }
        }
        let map = node.as_mapping_mut().expect("checked mapping");
        let key_value = Value::String(key.to_string());
        if i + 1 == keys.len() {
            map.insert(key_value, value);
            return Ok(());
        }
        node = map.entry(key_value).or_insert(Value::Null);
    }
    Ok(())
}

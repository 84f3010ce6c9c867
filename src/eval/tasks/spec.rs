//! Loading task files: the YAML header (unknown keys rejected with a suggestion and the line)
//! and the JSONL items next to it (errors name the file and 1-based line).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::normalize::parse_number;
use super::{MatchMode, Task, TaskItem, TaskKind, TaskRole};

/// Header keys, in the order they are documented.
pub const HEADER_KEYS: [&str; 9] = [
    "name",
    "role",
    "type",
    "data",
    "chat",
    "max_new_tokens",
    "stop",
    "regex",
    "match",
];

/// Keys that only apply to `type: generate`.
const GENERATE_ONLY: [&str; 4] = ["max_new_tokens", "stop", "regex", "match"];

/// Default most new tokens for generate tasks.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: Option<String>,
    role: Option<TaskRole>,
    #[serde(rename = "type")]
    kind: TaskKind,
    data: Option<PathBuf>,
    chat: Option<bool>,
    max_new_tokens: Option<usize>,
    stop: Option<Vec<String>>,
    regex: Option<String>,
    #[serde(rename = "match")]
    match_mode: Option<MatchMode>,
}

/// 1-based line of the first line that sets top-level `key` (unindented preferred).
fn key_line(text: &str, key: &str) -> Option<usize> {
    let sets_key = |line: &str| {
        let line = line.trim_start();
        let rest = line
            .strip_prefix(key)
            .or_else(|| line.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| line.strip_prefix(&format!("'{key}'")));
        rest.is_some_and(|r| r.trim_start().starts_with(':'))
    };
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .position(|l| !l.starts_with([' ', '\t']) && sets_key(l))
        .or_else(|| lines.iter().position(|l| sets_key(l)))
        .map(|i| i + 1)
}

fn at_line(path: &Path, text: &str, key: &str) -> String {
    match key_line(text, key) {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// The known key closest to `key`, when it is close enough to be a likely typo.
fn suggestion(key: &str) -> Option<&'static str> {
    HEADER_KEYS
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.7)
        .map(|(_, k)| k)
}

/// Loads a task YAML file and its items.
pub fn load(path: &Path) -> Result<Task> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task file {}", path.display()))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let serde_yaml::Value::Mapping(map) = &value else {
        bail!(
            "{}: a task file is a YAML mapping of header keys ({})",
            path.display(),
            HEADER_KEYS.join(", ")
        );
    };
    for key in map.keys() {
        let Some(key) = key.as_str() else {
            bail!("{}: header keys must be strings", path.display());
        };
        if !HEADER_KEYS.contains(&key) {
            let hint = match suggestion(key) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("known keys: {}", HEADER_KEYS.join(", ")),
            };
            bail!(
                "{}: unknown key `{key}` in task header; {hint}",
                at_line(path, &text, key)
            );
        }
    }
    let header: Header = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: invalid task header", path.display()))?;
    if header.kind != TaskKind::Generate {
        if let Some(key) = GENERATE_ONLY
            .iter()
            .find(|k| map.contains_key(serde_yaml::Value::from(**k)))
        {
            bail!(
                "{}: `{key}` only applies to `type: generate` (this task is {})",
                at_line(path, &text, key),
                header.kind.as_str()
            );
        }
    }
    let regex = match &header.regex {
        Some(pattern) => Some(Regex::new(pattern).with_context(|| {
            format!(
                "{}: `regex` is not a valid regular expression",
                at_line(path, &text, "regex")
            )
        })?),
        None => None,
    };
    if header
        .stop
        .as_ref()
        .is_some_and(|s| s.iter().any(String::is_empty))
    {
        bail!(
            "{}: `stop` strings must not be empty",
            at_line(path, &text, "stop")
        );
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task".into());
    let dir = path.parent().unwrap_or(Path::new("."));
    let data = dir.join(
        header
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{stem}.jsonl"))),
    );
    if !data.is_file() {
        bail!(
            "{}: data file {} does not exist (`data` is relative to the task file)",
            at_line(path, &text, "data"),
            data.display()
        );
    }
    let match_mode = header.match_mode.unwrap_or_default();
    let items = load_items(&data, header.kind, match_mode)?;
    let images = load_item_images(&data)?;
    Ok(Task {
        name: header.name.unwrap_or(stem),
        role: header.role.unwrap_or(TaskRole::Heldout),
        kind: header.kind,
        path: path.to_path_buf(),
        data,
        chat: header.chat.unwrap_or(true),
        max_new_tokens: header.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
        stop: header.stop.unwrap_or_default(),
        regex,
        match_mode,
        items,
        images,
    })
}

/// Each item's `"image"` path (resolved against the data file's folder), in item order; empty
/// when no item names one.
fn load_item_images(path: &Path) -> Result<Vec<Option<PathBuf>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task data {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut images = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}", path.display(), index + 1))?;
        images.push(match value.get("image") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(dir.join(p)),
            Some(other) => bail!(
                "{}:{}: bad item: `image` must be a path string, found {other}",
                path.display(),
                index + 1
            ),
        });
    }
    if images.iter().all(Option::is_none) {
        images.clear();
    }
    Ok(images)
}

/// Reads the JSONL items of a task of `kind`; blank lines are skipped.
pub fn load_items(path: &Path, kind: TaskKind, match_mode: MatchMode) -> Result<Vec<TaskItem>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task data {}", path.display()))?;
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = parse_item(line, kind, match_mode)
            .map_err(|e| anyhow::anyhow!("{}:{}: bad item: {e:#}", path.display(), index + 1))?;
        items.push(item);
    }
    if items.is_empty() {
        bail!("{}: no items", path.display());
    }
    Ok(items)
}

fn string_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!("`{key}` must be a string, found {other}"),
        None => bail!("missing `{key}` (a string)"),
    }
}

/// A reference answer written as a string or a number.
fn answer_text(value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => bail!("answers must be strings or numbers, found {other}"),
    }
}

fn parse_item(line: &str, kind: TaskKind, match_mode: MatchMode) -> Result<TaskItem> {
    let value: Value = serde_json::from_str(line).context("not valid JSON")?;
    let Value::Object(obj) = value else {
        bail!("an item is a JSON object");
    };
    match kind {
        TaskKind::MultipleChoice => {
            let prompt = string_field(&obj, "prompt")?;
            let choices: Vec<String> = match obj.get("choices") {
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|c| match c {
                        Value::String(s) if !s.is_empty() => Ok(s.clone()),
                        Value::String(_) => bail!("choices must not be empty strings"),
                        other => bail!("choices must be strings, found {other}"),
                    })
                    .collect::<Result<_>>()?,
                Some(other) => bail!("`choices` must be a list of strings, found {other}"),
                None => bail!("missing `choices` (a list of strings)"),
            };
            if choices.len() < 2 {
                bail!("`choices` needs at least two entries");
            }
            let answer = match obj.get("answer") {
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(i) if (i as usize) < choices.len() => i as usize,
                    _ => bail!(
                        "`answer` {n} is not a choice index (0..{})",
                        choices.len() - 1
                    ),
                },
                Some(Value::String(s)) => {
                    choices.iter().position(|c| c == s).with_context(|| {
                        format!("`answer` \"{s}\" is not one of the choices (or use an index)")
                    })?
                }
                Some(other) => bail!("`answer` must be a choice index, found {other}"),
                None => bail!("missing `answer` (the index of the correct choice)"),
            };
            Ok(TaskItem::MultipleChoice {
                prompt,
                choices,
                answer,
            })
        }
        TaskKind::Generate => {
            let prompt = string_field(&obj, "prompt")?;
            let answers: Vec<String> = match obj.get("answer") {
                Some(Value::Array(list)) => list.iter().map(answer_text).collect::<Result<_>>()?,
                Some(v) => vec![answer_text(v)?],
                None => bail!("missing `answer` (a string or a list of strings)"),
            };
            if answers.is_empty() {
                bail!("`answer` lists no answers");
            }
            if match_mode == MatchMode::Numeric {
                if let Some(bad) = answers.iter().find(|a| parse_number(a).is_none()) {
                    bail!("answer \"{bad}\" has no number in it (the task uses `match: numeric`)");
                }
            }
            Ok(TaskItem::Generate { prompt, answers })
        }
        TaskKind::Perplexity => {
            let text = string_field(&obj, "text")?;
            if text.is_empty() {
                bail!("`text` is empty");
            }
            Ok(TaskItem::Perplexity { text })
        }
    }
}

//! Training records read from JSONL: one JSON object per line, either
//! `{"prompt": ..., "response": ...}` or `{"messages": [{"role": ..., "content": ...}, ...]}`,
//! optionally with `"image": "path"` or `"images": ["path", ...]` (relative to the JSONL file,
//! one `<image>` placeholder each, in order) for vision-language models.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::model::tokenizer::ChatMessage;

/// Roles a message may have.
pub const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// One training conversation and the 1-based line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: usize,
    /// The conversation; a prompt/response record becomes `[user: prompt, assistant: response]`.
    pub messages: Vec<ChatMessage>,
    /// The record's images in placeholder order, resolved against the JSONL file's folder (not
    /// checked to exist here).
    pub images: Vec<PathBuf>,
}

/// Reads every record of the JSONL file at `path`; blank lines are skipped.
///
/// Errors name the file and line, say what is wrong and how to fix it. A file without records
/// is an error.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read training data {}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index + 1;
        let (messages, images) = parse_record_line(line)
            .map_err(|e| anyhow!("{} line {line_no}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        records.push(Record {
            line: line_no,
            messages,
            images: images.iter().map(|i| base.join(i)).collect(),
        });
    }
    if records.is_empty() {
        bail!(
            "{} contains no records: expected one JSON object per line, such as \
             {{\"prompt\": \"...\", \"response\": \"...\"}} or \
             {{\"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}, \
             {{\"role\": \"assistant\", \"content\": \"...\"}}]}}",
            path.display()
        );
    }
    Ok(records)
}

/// Parses one non-blank line into its conversation; the error says what is wrong (no location).
pub fn parse_line(line: &str) -> Result<Vec<ChatMessage>> {
    Ok(parse_record_line(line)?.0)
}

/// Parses one non-blank line into its conversation and its image paths as written.
pub fn parse_record_line(line: &str) -> Result<(Vec<ChatMessage>, Vec<String>)> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        // serde's own position says "line 1"; the caller names the file's line.
        let text = e.to_string();
        let what = text.split(" at line ").next().unwrap_or(&text);
        anyhow!(
            "invalid JSON at column {}: {what}; each line must hold exactly one complete JSON object",
            e.column()
        )
    })?;
    let Value::Object(obj) = value else {
        bail!(
            "expected a JSON object, found {}; write {{\"prompt\": ..., \"response\": ...}} \
             or {{\"messages\": [...]}}",
            kind(&value)
        );
    };
    let path = |key: &str, v: &Value| -> Result<String> {
        match v {
            Value::String(p) if !p.trim().is_empty() => Ok(p.clone()),
            Value::String(_) => {
                bail!("\"{key}\" holds an empty path; give each image's path relative to the JSONL file")
            }
            v => bail!("\"{key}\" must hold path strings, found {}", kind(v)),
        }
    };
    let image = match (obj.get("image"), obj.get("images")) {
        (Some(one), Some(many)) if !one.is_null() && !many.is_null() => {
            bail!("has both \"image\" and \"images\"; keep only one")
        }
        (Some(v), _) if !v.is_null() => vec![path("image", v)?],
        (_, Some(Value::Array(list))) => list
            .iter()
            .map(|v| path("images", v))
            .collect::<Result<Vec<_>>>()?,
        (_, Some(Value::Null)) | (_, None) => Vec::new(),
        (_, Some(v)) => bail!("\"images\" must be a list of paths, found {}", kind(v)),
    };
    let has_pair = obj.contains_key("prompt") || obj.contains_key("response");
    let messages = match (obj.get("messages"), has_pair) {
        (Some(_), true) => bail!(
            "has both \"messages\" and \"prompt\"/\"response\"; keep only one of the two forms"
        ),
        (Some(messages), false) => parse_messages(messages),
        (None, true) => parse_pair(&obj),
        (None, false) => {
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let found = if keys.is_empty() {
                "no fields".to_string()
            } else {
                format!("fields {}", keys.join(", "))
            };
            bail!(
                "has neither \"prompt\"/\"response\" nor \"messages\" ({found}); add \
                 {{\"prompt\": ..., \"response\": ...}} or a \"messages\" list"
            )
        }
    }?;
    Ok((messages, image))
}

fn parse_pair(obj: &Map<String, Value>) -> Result<Vec<ChatMessage>> {
    let field = |name: &str, other: &str| -> Result<String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => bail!("\"{name}\" must be a string, found {}", kind(v)),
            None => bail!("has \"{other}\" but no \"{name}\"; add a \"{name}\" string"),
        }
    };
    let prompt = field("prompt", "response")?;
    let response = field("response", "prompt")?;
    Ok(vec![
        ChatMessage {
            role: "user".into(),
            content: prompt,
        },
        ChatMessage {
            role: "assistant".into(),
            content: response,
        },
    ])
}

fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>> {
    let Value::Array(list) = value else {
        bail!(
            "\"messages\" must be a list of {{\"role\": ..., \"content\": ...}} objects, found {}",
            kind(value)
        );
    };
    if list.is_empty() {
        bail!("\"messages\" is empty; add at least a user and an assistant message");
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(m) = item else {
            bail!(
                "messages[{i}] must be an object {{\"role\": ..., \"content\": ...}}, found {}",
                kind(item)
            );
        };
        let role = match m.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
            Some(Value::String(r)) => bail!(
                "messages[{i}] has role \"{r}\"; the role must be one of {}",
                ROLES.join(", ")
            ),
            Some(v) => bail!("messages[{i}].role must be a string, found {}", kind(v)),
            None => bail!(
                "messages[{i}] has no \"role\"; add one of {}",
                ROLES.join(", ")
            ),
        };
        let content = match m.get("content") {
            Some(Value::String(c)) => c.clone(),
            Some(v) => bail!("messages[{i}].content must be a string, found {}", kind(v)),
            None => bail!("messages[{i}] has no \"content\"; add the message text as a string"),
        };
        messages.push(ChatMessage { role, content });
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        bail!(
            "\"messages\" has no assistant turn, so there is nothing to train on; add \
             {{\"role\": \"assistant\", \"content\": ...}} with the reply"
        );
    }
    Ok(messages)
}

/// A JSON value's kind, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn err(text: &str) -> String {
        let f = write(text);
        format!("{:#}", read_records(f.path()).unwrap_err())
    }

    #[test]
    fn both_forms_and_blank_lines() {
        let f = write(concat!(
            "{\"prompt\": \"hi\", \"response\": \"hello\", \"image\": \"a.png\", \"extra\": 1}\n",
            "\n   \n",
            "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, ",
            "{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\r\n",
        ));
        let recs = read_records(f.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].line, 1);
        assert_eq!(recs[1].line, 4);
        assert_eq!(
            recs[0]
                .messages
                .iter()
                .map(|m| m.role.as_str())
                .collect::<Vec<_>>(),
            ["user", "assistant"]
        );
        assert_eq!(recs[0].messages[1].content, "hello");
        assert_eq!(recs[1].messages.len(), 3);
        assert_eq!(recs[1].messages[2].content, "a");
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = err("{\"prompt\": \"a\", \"response\": \"b\"}\n[1, 2]\n");
        assert!(
            e.contains("line 2") && e.contains("expected a JSON object"),
            "{e}"
        );
        let e = err("{\"prompt\": \"a\"}\n");
        assert!(e.contains("line 1") && e.contains("no \"response\""), "{e}");
        let e = err("{\"prompt\": 3, \"response\": \"b\"}\n");
        assert!(
            e.contains("\"prompt\" must be a string, found a number"),
            "{e}"
        );
        let e = err("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n");
        assert!(e.contains("role \"bot\""), "{e}");
        let e = err("{\"messages\": []}\n");
        assert!(e.contains("\"messages\" is empty"), "{e}");
        let e = err("{\"messages\": [{\"role\": \"user\"}]}\n");
        assert!(e.contains("messages[0] has no \"content\""), "{e}");
        let e = err("{\"messages\": \"hi\"}\n");
        assert!(e.contains("must be a list"), "{e}");
        let e = err("{\"messages\": [], \"prompt\": \"a\", \"response\": \"b\"}\n");
        assert!(e.contains("keep only one"), "{e}");
        let e = err("\n\n{\"text\": \"a\"}\n");
        assert!(e.contains("line 3") && e.contains("fields text"), "{e}");
    }

    #[test]
    fn blank_only_file_is_empty() {
        let e = err("\n  \n\n");
        assert!(e.contains("contains no records"), "{e}");
    }
}

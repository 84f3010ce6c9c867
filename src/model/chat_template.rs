//! The chat template: found where transformers looks for it (`chat_template.jinja`, a string or a
//! list of named templates in `tokenizer_config.json`, a processor's `chat_template.json`) and
//! rendered the way its `apply_chat_template` renders (Jinja with `trim_blocks` and
//! `lstrip_blocks`, Python-style `tojson`, `raise_exception`, `strftime_now`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// A chat template and where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    pub text: String,
    /// The file (and entry) it came from, for `inspect` and messages.
    pub source: String,
}

/// File transformers 5 writes the default template to, beside `tokenizer_config.json`.
pub const TEMPLATE_FILE: &str = "chat_template.jinja";
/// File older processors (vision-language models) kept their template in.
pub const PROCESSOR_TEMPLATE_FILE: &str = "chat_template.json";

/// Finds the model's chat template. `chat_template.jinja` wins over `tokenizer_config.json`, as in
/// transformers; a list of named templates gives the one named `default`.
pub fn find(dir: &Path, tokenizer_config: &Value) -> Result<Option<ChatTemplate>> {
    let jinja = dir.join(TEMPLATE_FILE);
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja)
            .with_context(|| format!("cannot read {}", jinja.display()))?;
        return Ok(Some(ChatTemplate {
            text,
            source: TEMPLATE_FILE.into(),
        }));
    }
    match tokenizer_config.get("chat_template") {
        Some(Value::String(text)) => {
            return Ok(Some(ChatTemplate {
                text: text.clone(),
                source: "tokenizer_config.json `chat_template`".into(),
            }))
        }
        Some(Value::Array(list)) => return named_default(list).map(Some),
        Some(Value::Null) | None => {}
        Some(other) => bail!(
            "tokenizer_config.json: `chat_template` must be a string or a list of {{name, template}}, got {}",
            kind_of(other)
        ),
    }
    let processor = dir.join(PROCESSOR_TEMPLATE_FILE);
    if processor.is_file() {
        let text = std::fs::read_to_string(&processor)
            .with_context(|| format!("cannot read {}", processor.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", processor.display()))?;
        let template = value
            .get("chat_template")
            .and_then(Value::as_str)
            .with_context(|| format!("{} has no string `chat_template`", processor.display()))?;
        return Ok(Some(ChatTemplate {
            text: template.to_string(),
            source: PROCESSOR_TEMPLATE_FILE.into(),
        }));
    }
    Ok(None)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Object(_) => "an object",
        _ => "another type",
    }
}

/// The `default` entry of a list of named templates.
fn named_default(list: &[Value]) -> Result<ChatTemplate> {
    let mut names = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let name = entry.get("name").and_then(Value::as_str).with_context(|| {
            format!("tokenizer_config.json: `chat_template[{i}]` has no string `name`")
        })?;
        let text = entry
            .get("template")
            .and_then(Value::as_str)
            .with_context(|| {
                format!(
                    "tokenizer_config.json: `chat_template[{i}]` ({name}) has no string `template`"
                )
            })?;
        if name == "default" {
            return Ok(ChatTemplate {
                text: text.to_string(),
                source: format!("tokenizer_config.json `chat_template[{i}]` (name default)"),
            });
        }
        names.push(name.to_string());
    }
    bail!(
        "tokenizer_config.json lists chat templates named {} but none named `default`, which is the one transformers uses",
        names.join(", ")
    )
}

/// The values a template sees besides the messages.
pub struct RenderContext<'a> {
    pub add_generation_prompt: bool,
    pub bos_token: Option<&'a str>,
    pub eos_token: Option<&'a str>,
    pub pad_token: Option<&'a str>,
}

/// Renders `messages` (any serialisable list of `{role, content}`).
pub fn render<M: serde::Serialize>(
    template: &ChatTemplate,
    messages: &M,
    ctx: &RenderContext,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_function("strftime_now", |format: String| -> String {
        chrono::Local::now().format(&format).to_string()
    });
    env.add_filter("tojson", tojson);
    env.add_template("chat", &template.text)
        .with_context(|| format!("the chat template from {} does not parse", template.source))?;
    env.get_template("chat")?
        .render(minijinja::context! {
            messages => messages,
            add_generation_prompt => ctx.add_generation_prompt,
            bos_token => ctx.bos_token.unwrap_or_default(),
            eos_token => ctx.eos_token.unwrap_or_default(),
            pad_token => ctx.pad_token.unwrap_or_default(),
        })
        .with_context(|| {
            format!(
                "rendering the chat template from {} failed",
                template.source
            )
        })
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`, which is
/// what transformers' `tojson` filter calls (minijinja's own escapes HTML characters and does not
/// space its separators). Maps keep their insertion order, as Python dicts do.
fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let options = DumpOptions {
        indent: kwargs.get("indent")?,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    py_dumps(&value, &options, 0, &mut out)?;
    Ok(minijinja::Value::from_safe_string(out))
}

struct DumpOptions {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn py_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's float repr for the common cases (`2.0`, `2.5`, `1e-05` differs and is left to Rust).
fn py_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn py_dumps(
    v: &minijinja::Value,
    o: &DumpOptions,
    level: usize,
    out: &mut String,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let item_sep = if o.indent.is_some() { "," } else { ", " };
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = o.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => match (i64::try_from(v.clone()), f64::try_from(v.clone())) {
            (Ok(i), _) if !v.to_string().contains('.') => out.push_str(&i.to_string()),
            (_, Ok(f)) => out.push_str(&py_float(f)),
            _ => out.push_str(&v.to_string()),
        },
        ValueKind::String => py_string(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<minijinja::Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_dumps(item, o, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<minijinja::Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_string(&key.to_string(), o.ensure_ascii, out);
                out.push_str(": ");
                py_dumps(&v.get_item(key)?, o, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => py_string(&v.to_string(), o.ensure_ascii, out),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> RenderContext<'static> {
        RenderContext {
            add_generation_prompt: false,
            bos_token: None,
            eos_token: None,
            pad_token: None,
        }
    }

    fn render_text(text: &str) -> String {
        let template = ChatTemplate {
            text: text.into(),
            source: "test".into(),
        };
        render(&template, &json!([]), &ctx()).unwrap()
    }

    /// Hand-checked against Python's `json.dumps` (insertion order, spaced separators, no HTML
    /// escaping, `2.0` for a float).
    #[test]
    fn tojson_matches_python_json_dumps() {
        assert_eq!(
            render_text(
                r#"{{ {"name": "get_weather", "args": [1, 2.5, 2.0, "<b>é</b>", none, true], "n": {}} | tojson }}"#
            ),
            r#"{"name": "get_weather", "args": [1, 2.5, 2.0, "<b>é</b>", null, true], "n": {}}"#
        );
        assert_eq!(
            render_text(r#"{{ {"b": [1, {"a": "x\ny"}]} | tojson(indent=2) }}"#),
            "{\n  \"b\": [\n    1,\n    {\n      \"a\": \"x\\ny\"\n    }\n  ]\n}"
        );
        assert_eq!(
            render_text(r#"{{ {"b": 1, "a": 2} | tojson(sort_keys=true) }}"#),
            r#"{"a": 2, "b": 1}"#
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_as_transformers() {
        let template = ChatTemplate {
            text: "{% for m in messages %}\n    {{ m.content }}\n{% endfor %}".into(),
            source: "test".into(),
        };
        let out = render(
            &template,
            &json!([{"content": "a"}, {"content": "b"}]),
            &ctx(),
        )
        .unwrap();
        // Jinja2 with trim_blocks and lstrip_blocks gives "    a\n    b\n".
        assert_eq!(out, "    a\n    b\n");
    }
}

//! A model's own Jinja chat template rendered with minijinja the way HF transformers renders it
//! (`apply_chat_template`): `trim_blocks` and `lstrip_blocks` on, loop controls, Python string
//! methods, `raise_exception`, `strftime_now`, and a `tojson` that writes what Python's
//! `json.dumps(ensure_ascii=False)` writes.

use std::sync::Arc;

use minijinja::value::{Kwargs, Serde, Value};
use minijinja::{Environment, ErrorKind, syntax::SyntaxConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::text::pystr;

/// One chat turn. `content` is plain text (SEALONG never sends multimodal content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template plus the special-token strings templates may reference.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat";
/// The part of a render's fuel that does not grow with the input (see [`ChatTemplate::render`]).
const BASE_FUEL: u64 = 1 << 18;

impl ChatTemplate {
    /// Compiles `source`. `bos_token` / `eos_token` are the strings HF passes to the template.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(py_method);
        env.add_filter("trim", py_trim);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| Error::Template(format!("the template does not compile: {e}")))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the template opens the assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        // A template is code from the model file: its work and the bytes it makes are bounded
        // by a budget linear in its input (issue 17), so a template that loops or repeats
        // without bound fails instead of taking the memory. minijinja's fuel charges one fuel
        // per instruction and per 64 bytes made (output, strings, lists), checked before a
        // large allocation; the budget is 2^18 + one per input byte, so a render makes at most
        // 16 MiB + 64 bytes per input byte. Real templates use a small part of it.
        let input = self.source.len()
            + self.bos_token.len()
            + self.eos_token.len()
            + messages.iter().map(|m| m.role.len() + m.content.len()).sum::<usize>();
        let fuel = BASE_FUEL + input as u64;
        let mut env = (*self.env).clone();
        env.set_fuel(Some(fuel));
        let tmpl = env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => Value::from(Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        tmpl.render(ctx).map_err(|e| {
            let mut msg = e.to_string();
            if e.kind() == ErrorKind::OutOfFuel {
                msg.push_str(&format!(
                    " (a template may do {fuel} steps for these {input} bytes of template and messages; \
                     this one loops or repeats without bound)"
                ));
            }
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Error::Template(msg)
        })
    }
}

/// Python's `str` methods (minijinja-contrib's pycompat), with `strip`, `lstrip`, `rstrip` and
/// `split` without arguments using Python's whitespace (which includes U+001C..U+001F), as
/// jinja2 runs them.
fn py_method(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        let no_args = args.is_empty() || (args.len() == 1 && args[0].is_none());
        match method {
            "strip" if no_args => return Ok(Value::from(pystr::strip(s))),
            "lstrip" if no_args => return Ok(Value::from(s.trim_start_matches(pystr::is_space))),
            "rstrip" if no_args => return Ok(Value::from(s.trim_end_matches(pystr::is_space))),
            "split" if args.is_empty() => {
                return Ok(Value::from(
                    pystr::split_whitespace(s).map(Value::from).collect::<Vec<_>>(),
                ));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// jinja2's `trim` filter: the value as a string, then Python's `str.strip(chars)`.
fn py_trim(value: &Value, chars: Option<String>) -> Value {
    let owned;
    let s = match value.as_str() {
        Some(s) => s,
        None => {
            owned = value.to_string();
            &owned
        }
    };
    Value::from(match chars {
        Some(chars) => s.trim_matches(|c| chars.contains(c)),
        None => pystr::strip(s),
    })
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised: {message}"),
    ))
}

/// `strftime_now(format)` as HF provides it (Llama-3.x templates print today's date). Only
/// the conversions templates use are supported; others are left as written.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

/// Formats a UNIX time (UTC) with a small strftime subset.
pub(crate) fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some(o) => out.push_str(&format!("%-{o}")),
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// HF's `tojson`: `json.dumps(value, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, Python's separators (`", "`, `": "`).
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = match indent {
        Some(v) if !v.is_none() => Some(usize::try_from(v)?),
        _ => kwargs.get::<Option<usize>>("indent")?,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be a pair",
            ));
        }
        // Python's default item separator is "," when indenting (newlines follow).
        None => (if indent.is_some() { ",".into() } else { ", ".into() }, ": ".into()),
    };
    let json: serde_json::Value =
        serde_json::to_value(value).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_py_json(&json, indent, &item_sep, &key_sep, sort_keys, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_py_json(
    v: &serde_json::Value,
    indent: Option<usize>,
    item_sep: &str,
    key_sep: &str,
    sort_keys: bool,
    level: usize,
    out: &mut String,
) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, item_sep, key_sep, sort_keys, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            let mut entries: Vec<_> = map.iter().collect();
            if sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&py_json_string(k));
                out.push_str(key_sep);
                write_py_json(item, indent, item_sep, key_sep, sort_keys, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        J::String(s) => out.push_str(&py_json_string(s)),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string literal as Python writes it with `ensure_ascii=False`.
fn py_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
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
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 00:00:00 UTC
        assert_eq!(strftime("%d %b %Y", 1_721_952_000), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %-d %H:%M:%S %%", 1_721_952_000 + 3723),
            "Friday July 26 01:02:03 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    }

    #[test]
    fn renders_python_style_json_and_methods() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0]['content'].strip() }}|{{ bos_token }}",
            "<s>",
            "</s>",
        )
        .expect("compile");
        let out = t.render(&[Message::user("  hé \"x\"\n ")], false).expect("render");
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"  hé \\\"x\\\"\\n \"}|hé \"x\"|<s>"
        );
    }

    #[test]
    fn strip_and_trim_use_python_whitespace() {
        let t = ChatTemplate::new(
            "{{ messages[0].content | trim }}|{{ messages[0].content.strip() }}|{{ messages[0].content.rstrip() }}|\
             {{ messages[0].content.split() | join(',') }}|{{ 'xxaxx' | trim('x') }}",
            "",
            "",
        )
        .expect("compile");
        let out = t
            .render(&[Message::user("\u{1f} a\u{1c}b\u{a0}")], false)
            .expect("render");
        assert_eq!(out, "a\u{1c}b|a\u{1c}b|\u{1f} a\u{1c}b|a,b|a");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").expect("compile");
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let t = ChatTemplate::new("{% for m in messages %}\n  {{ m.role }}\n{% endfor %}\n", "", "").expect("c");
        let out = t
            .render(&[Message::user("a"), Message::assistant("b")], false)
            .expect("r");
        assert_eq!(out, "  user\n  assistant\n");
    }
}

//! Plain-text tables for the CLI's human output.

use serde_json::Value;

/// Renders rows under headers, columns padded to their widest cell.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A JSON value as a cell: strings bare, arrays joined with ", ", null as "-".
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(v) => v.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM` UTC ("-" for none or 0).
pub fn time(v: Option<&Value>) -> String {
    let Some(secs) = v.and_then(Value::as_u64).filter(|s| *s > 0) else {
        return "-".into();
    };
    let (y, m, d, hh, mm, _) = crate::civil::from_unix(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_cells() {
        let t = render(
            &["NAME", "IP"],
            &[
                vec!["alice".into(), "100.64.0.1".into()],
                vec!["b".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME   IP\nalice  100.64.0.1\nb      -\n");
        assert_eq!(cell(Some(&serde_json::json!(["a", "b"]))), "a, b");
        assert_eq!(
            time(Some(&serde_json::json!(86400 * 365))),
            "1971-01-01 00:00"
        );
    }
}

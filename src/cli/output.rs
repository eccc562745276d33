//! How results reach stdout: plain tables for people, or with `--json` the envelope's `data`
//! as it came, for scripts (`jq`). Progress and errors go to stderr, never here.

use std::io::Write;

use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

use super::client::{CliError, CliResult};

/// The output mode chosen by `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub json: bool,
}

/// One column: its heading and where its value lives in an item (a JSON pointer).
pub type Column = (&'static str, &'static str);

impl Output {
    /// A list: `data` itself as JSON, else a table of `items` with `columns`.
    pub fn list(&self, data: &Value, items: &[Value], columns: &[Column]) -> CliResult<()> {
        if self.json {
            return self.json(data);
        }
        line(&table(items, columns))
    }

    /// One object: as JSON, else one `field  value` line per column.
    pub fn object(&self, data: &Value, columns: &[Column]) -> CliResult<()> {
        if self.json {
            return self.json(data);
        }
        line(&fields(data, columns))
    }

    /// A one-line result for people (`Deleted vm-1.`); the data as JSON for scripts.
    pub fn done(&self, data: &Value, sentence: &str) -> CliResult<()> {
        if self.json {
            return self.json(data);
        }
        line(sentence)
    }

    pub fn json(&self, data: &Value) -> CliResult<()> {
        let text = serde_json::to_string_pretty(data)
            .map_err(|e| anyhow::Error::new(e).context("encoding the answer"))?;
        line(&text)
    }
}

/// Writes `text` and a newline to stdout. A closed stdout (`voidvm vm list | head -1`) is
/// [`CliError::StdoutClosed`], which ends the command quietly.
pub fn line(text: &str) -> CliResult<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::StdoutClosed),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout").into()),
    }
}

/// A cell's text: strings bare, null as `-`, anything else as JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A borderless table, headings in capitals, as `kubectl`/`docker` print them.
pub fn table(items: &[Value], columns: &[Column]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(h, _)| h.to_string()));
    for item in items {
        table.add_row(columns.iter().map(|(_, ptr)| cell(item.pointer(ptr))));
    }
    // comfy-table pads every cell on both sides; the first column needs no left margin.
    table
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One object as `FIELD  value` lines.
pub fn fields(item: &Value, columns: &[Column]) -> String {
    let width = columns.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
    columns
        .iter()
        .map(|(h, ptr)| format!("{h:<width$}  {}", cell(item.pointer(ptr))))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const COLUMNS: &[Column] = &[
        ("ID", "/id"),
        ("NAME", "/name"),
        ("CPU", "/cpu"),
        ("JOB", "/job/id"),
    ];

    #[test]
    fn a_table_has_a_heading_and_aligned_rows() {
        let items = vec![
            json!({"id": "vm-1", "name": "web", "cpu": 2, "job": {"id": "job-9"}}),
            json!({"id": "vm-22", "name": "database", "cpu": 16, "job": null}),
        ];
        let text = table(&items, COLUMNS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(lines[1].starts_with("vm-1 "), "{text}");
        assert!(lines[2].starts_with("vm-22"), "{text}");
        // Columns line up: NAME starts where each row's name starts.
        let at = lines[0].find("NAME").unwrap();
        assert_eq!(&lines[1][at..at + 3], "web", "{text}");
        assert_eq!(&lines[2][at..at + 8], "database", "{text}");
        assert!(lines[1].ends_with("job-9"), "{text}");
        assert!(lines[2].ends_with('-'), "a null shows as -: {text}");
    }

    #[test]
    fn an_empty_list_is_just_the_heading() {
        assert_eq!(table(&[], COLUMNS).lines().count(), 1);
    }

    #[test]
    fn fields_are_one_per_line() {
        let text = fields(&json!({"id": "vm-1", "name": "web", "cpu": 2}), COLUMNS);
        assert_eq!(text, "ID    vm-1\nNAME  web\nCPU   2\nJOB   -");
    }
}

//! Turning results into tables (Markdown for people, CSV for programs) and
//! into a picture ([`plot`]).

pub mod plot;

use std::fmt::Write;

/// One table cell: the text shown, and the number behind it for the CSV.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    value: Option<f64>,
}

impl Cell {
    /// A cell of text only.
    pub fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            value: None,
        }
    }

    /// A number shown with `decimals` decimals (and thousands separators).
    pub fn number(value: f64, decimals: usize) -> Cell {
        Cell {
            text: group_thousands(&format!("{value:.decimals$}")),
            value: Some(value),
        }
    }

    /// A number shown as custom text.
    pub fn labelled(value: f64, text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            value: Some(value),
        }
    }

    /// No value: shown as a dash.
    pub fn empty() -> Cell {
        Cell::text("—")
    }

    /// The text shown.
    pub fn shown(&self) -> &str {
        &self.text
    }
}

/// A titled table; the first column names the row.
#[derive(Debug, Clone)]
pub struct Table {
    /// Short machine name, the first CSV column.
    pub id: &'static str,
    /// Heading shown above the table.
    pub title: String,
    /// Column headers, units included.
    pub columns: Vec<String>,
    /// Rows of cells, one per column.
    pub rows: Vec<Vec<Cell>>,
    /// Sentences printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table.
    pub fn new(id: &'static str, title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            id,
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<Cell>) {
        assert_eq!(cells.len(), self.columns.len(), "row width in {}", self.id);
        self.rows.push(cells);
    }

    /// Adds a note under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table in GitHub Markdown, numbers right-aligned.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        let _ = writeln!(out, "| {} |", self.columns.join(" | "));
        let rules: Vec<&str> = (0..self.columns.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "| {} |", rules.join(" | "));
        for row in &self.rows {
            let texts: Vec<&str> = row.iter().map(|c| c.text.as_str()).collect();
            let _ = writeln!(out, "| {} |", texts.join(" | "));
        }
        for note in &self.notes {
            let _ = write!(out, "\n{note}\n");
        }
        out
    }
}

/// Every numeric cell of every table, one per line:
/// `table,row,column,value`, where `row` is the row's first cell.
pub fn csv(tables: &[Table]) -> String {
    let mut out = String::from("table,row,column,value\n");
    for table in tables {
        for row in &table.rows {
            for (column, cell) in table.columns.iter().zip(row).skip(1) {
                if let Some(value) = cell.value {
                    let _ = writeln!(
                        out,
                        "{},{},{},{value}",
                        table.id,
                        csv_field(&row[0].text),
                        csv_field(column)
                    );
                }
            }
        }
    }
    out
}

/// Quotes a CSV field if it needs it.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `1234567.8` as `1,234,567.8`.
fn group_thousands(number: &str) -> String {
    let (sign, rest) = number.split_at(number.starts_with('-') as usize);
    let (whole, fraction) = rest.split_at(rest.find('.').unwrap_or(rest.len()));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}{fraction}")
}

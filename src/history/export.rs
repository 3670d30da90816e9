//! Querying and exporting the history as text: the filter built from the
//! arguments of `sipsentry history` and of the HTTP API, and the table, CSV
//! and JSON writers both use.

use std::io::Write;

use super::query::{self, Filter, Row};
use super::{HistoryError, HistoryStore, Reader};
use crate::number::{self, Country};

/// Output formats of `history` and the export API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Why rows could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("no history at {0} yet (it is written by `serve`; check history.path)")]
    NoHistory(String),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("cannot write the rows: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write a CSV row: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write a JSON row: {0}")]
    Json(#[from] serde_json::Error),
}

/// Rows the table format shows when no `--limit` is given.
pub const TABLE_DEFAULT_LIMIT: u64 = 50;

/// Builds a filter from the command's (or API's) text arguments. The number
/// is normalised to E.164 with `country` (`numbers.default_country`).
pub fn filter(
    country: &Country,
    from: Option<&str>,
    to: Option<&str>,
    number_text: Option<&str>,
    action: Option<&str>,
) -> Result<Filter, HistoryError> {
    let number = match number_text {
        Some(n) => Some(
            number::to_e164(n, country).map_err(|e| HistoryError::Filter {
                key: "number",
                message: format!("{n:?}: {e}"),
            })?,
        ),
        None => None,
    };
    let f = Filter {
        rule: None,
        from_ms: from.map(|t| query::parse_time("from", t)).transpose()?,
        to_ms: to.map(|t| query::parse_time("to", t)).transpose()?,
        number,
        action: action.map(str::to_string),
    };
    f.validate()?;
    Ok(f)
}

/// Writes rows in `format`. With a limit (or as a table) the newest rows
/// come first; a CSV or JSON export without one streams every row, oldest
/// first, without holding them in memory.
pub fn write_rows(
    store: &HistoryStore,
    filter: &Filter,
    limit: Option<u64>,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    if !store.exists() {
        return Err(ExportError::NoHistory(store.describe()));
    }
    let mut conn = store.open_read()?;
    let limit = match (limit, format) {
        (None, Format::Table) => Some(TABLE_DEFAULT_LIMIT),
        (l, _) => l,
    };
    let mut writer = RowWriter::new(format, out)?;
    let n = match limit {
        Some(l) => {
            let rows = query::page(&mut conn, filter, 1, l)?;
            for r in &rows {
                writer.row(r)?;
            }
            rows.len() as u64
        }
        None => writer.scan(&mut conn, filter)?,
    };
    writer.finish()?;
    Ok(n)
}

/// Writes rows one at a time in a format (shared with the export API).
pub struct RowWriter<'a> {
    format: Format,
    out: &'a mut dyn Write,
    first: bool,
}

/// One CSV line (quoted as needed, each cell [`neutralised`]), without the
/// writer's buffering, so each row can go out as soon as it is read.
pub fn csv_line(fields: &[impl AsRef<[u8]>]) -> Result<Vec<u8>, ExportError> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(fields.iter().map(|f| neutralised(f.as_ref())))?;
    w.into_inner().map_err(|e| ExportError::Io(e.into_error()))
}

/// A cell a spreadsheet will not run as a formula. Callers, Call-IDs and
/// categories come from the network, so a cell beginning with `=`, `+`,
/// `-`, `@`, tab or carriage return gets a leading `'`, as OWASP's CSV
/// injection advice has it. A plain signed number (an E.164 caller such as
/// `+15551234567`, a negative figure) stays as it is: it holds no formula.
pub fn neutralised(cell: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let risky = matches!(
        cell.first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    let plain_number = cell.len() > 1
        && matches!(cell[0], b'+' | b'-')
        && cell[1..].iter().all(|b| b.is_ascii_digit() || *b == b'.')
        && cell[1..].iter().filter(|b| **b == b'.').count() <= 1;
    if risky && !plain_number {
        let mut out = Vec::with_capacity(cell.len() + 1);
        out.push(b'\'');
        out.extend_from_slice(cell);
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

impl<'a> RowWriter<'a> {
    pub fn new(format: Format, out: &'a mut dyn Write) -> Result<Self, ExportError> {
        let w = RowWriter {
            format,
            out,
            first: true,
        };
        match format {
            Format::Csv => w.out.write_all(&csv_line(query::CSV_HEADER)?)?,
            Format::Json => w.out.write_all(b"[")?,
            Format::Table => writeln!(
                w.out,
                "{:<24} {:<17} {:<17} {:<7} {:<15} {:>5} {:>4}  category",
                "time", "caller", "called", "action", "rule", "code", "score"
            )?,
        }
        Ok(w)
    }

    pub fn row(&mut self, r: &Row) -> Result<(), ExportError> {
        match self.format {
            Format::Csv => self.out.write_all(&csv_line(&r.csv_record())?)?,
            Format::Json => {
                if !self.first {
                    self.out.write_all(b",")?;
                }
                self.out.write_all(b"\n")?;
                serde_json::to_writer(&mut *self.out, r)?;
            }
            Format::Table => writeln!(
                self.out,
                "{:<24} {:<17} {:<17} {:<7} {:<15} {:>5} {:>4}  {}",
                r.time,
                r.caller_e164.as_deref().unwrap_or(&r.caller),
                r.called,
                r.action,
                r.rule,
                r.response_code
                    .or(r.final_code)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.score,
                r.category.as_deref().unwrap_or("-")
            )?,
        }
        self.first = false;
        Ok(())
    }

    /// Writes every row `filter` matches, oldest first, one at a time.
    pub fn scan(&mut self, conn: &mut Reader, filter: &Filter) -> Result<u64, ExportError> {
        let mut failed = None;
        let n = query::scan(conn, filter, None, |r| match self.row(&r) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    pub fn finish(self) -> Result<(), ExportError> {
        if self.format == Format::Json {
            self.out.write_all(b"\n]\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(line: &[u8]) -> Vec<String> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line);
        r.records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn formula_cells_are_neutralised_and_numbers_are_not() {
        let hostile = [
            "=HYPERLINK(\"http://evil\",\"x\")",
            "=1+1",
            "@SUM(1+1)",
            "-2+3@evil",
            "+1+cmd|' /C calc'!A0",
            "\t=1",
            "\r=1",
        ];
        let line = csv_line(&hostile).unwrap();
        for (cell, original) in cells(&line).iter().zip(hostile) {
            assert_eq!(cell, &format!("'{original}"), "{line:?}");
        }
        let plain = [
            "+15551234567",
            "-12",
            "-0.5",
            "+",
            "sip:a@b",
            "",
            "[{\"a\":1}]",
        ];
        let expected = [
            "+15551234567",
            "-12",
            "-0.5",
            "'+",
            "sip:a@b",
            "",
            "[{\"a\":1}]",
        ];
        assert_eq!(cells(&csv_line(&plain).unwrap()), expected);
    }
}

//! Query results as text: an aligned table, CSV or JSON, with arrow's own writers
//! (`arrow::util::pretty`, `arrow::csv`, `arrow::json`; the CSV and JSON writers come with the
//! `arrow` that DataFusion depends on).

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;

/// How query results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned table with a header, for reading (arrow's pretty printer).
    #[default]
    Table,
    /// CSV with a header line; NULL is an empty field. Nested columns (lists, structs) cannot be
    /// written as CSV: use json.
    Csv,
    /// One JSON array of row objects, column name to value; NULL is `null`.
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Table, Format::Csv, Format::Json];

    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// Results that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write the results as {format}: {source}")]
    Arrow {
        format: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("cannot write the results: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `batches` (all with `schema`) to `out` in `format`.
pub fn write_batches(
    schema: &Schema,
    batches: &[RecordBatch],
    format: Format,
    mut out: impl Write,
) -> Result<(), OutputError> {
    let arrow = |source| OutputError::Arrow { format: format.name(), source };
    match format {
        Format::Table => {
            let table =
                arrow::util::pretty::pretty_format_batches_with_schema(std::sync::Arc::new(schema.clone()), batches)
                    .map_err(arrow)?;
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(std::sync::Arc::new(schema.clone()))).map_err(arrow)?;
            }
            for batch in batches {
                // Nested columns (lists, structs) fail here: they need JSON.
                writer.write(batch).map_err(arrow)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs).map_err(arrow)?;
            writer.finish().map_err(arrow)?;
            drop(writer);
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

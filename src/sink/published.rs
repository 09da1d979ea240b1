//! The published table descriptions of `schemas/` (one JSON file per table), embedded in the
//! binary and turned into Arrow schemas, so tests (and users, via `promptad schema`-style
//! tooling) can hold every writer to them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema};
use serde_json::Value;

/// A published description that cannot be read: the file and what is wrong in it.
#[derive(Debug, thiserror::Error)]
#[error("schemas/{file}.json: {problem}")]
pub struct SchemaFileError {
    pub file: String,
    pub problem: String,
}

type Result<T, E = SchemaFileError> = std::result::Result<T, E>;

/// A problem, before the file is known.
fn problem(text: impl Into<String>) -> SchemaFileError {
    SchemaFileError { file: String::new(), problem: text.into() }
}

/// `(file stem, contents)` of every file in `schemas/`.
pub const PUBLISHED: [(&str, &str); 6] = [
    ("image_shard", include_str!("../../schemas/image_shard.json")),
    ("image_scores", include_str!("../../schemas/image_scores.json")),
    ("pixel_maps", include_str!("../../schemas/pixel_maps.json")),
    ("metric_stats", include_str!("../../schemas/metric_stats.json")),
    ("prompt_artifact", include_str!("../../schemas/prompt_artifact.json")),
    ("run_manifest", include_str!("../../schemas/run_manifest.json")),
];

/// One published table description.
#[derive(Debug, Clone)]
pub struct PublishedTable {
    pub name: String,
    pub table: String,
    pub schema_version: u64,
    pub format: String,
    pub partitioning: Vec<String>,
    document: Value,
}

impl PublishedTable {
    /// The description in `schemas/<name>.json`.
    pub fn get(name: &str) -> Result<Self> {
        let (_, text) = PUBLISHED
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| SchemaFileError { file: name.into(), problem: "no such file".into() })?;
        Self::parse(name, text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let in_file = |problem: String| SchemaFileError { file: name.into(), problem };
        let document: Value = serde_json::from_str(text).map_err(|e| in_file(format!("not JSON ({e})")))?;
        let string =
            |key: &str| document[key].as_str().map(str::to_string).ok_or_else(|| in_file(format!("no string `{key}`")));
        Ok(Self {
            name: name.into(),
            table: string("table")?,
            schema_version: document["schema_version"].as_u64().ok_or_else(|| in_file("no `schema_version`".into()))?,
            format: string("format")?,
            partitioning: document["partitioning"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            document,
        })
    }

    /// The Arrow schema; `parameters` give the values of size expressions (`map_size`).
    pub fn arrow_schema(&self, parameters: &HashMap<&str, i64>) -> Result<Schema> {
        let fields = columns(&self.document["columns"], parameters)
            .map_err(|e| SchemaFileError { file: self.name.clone(), problem: e.problem })?;
        Ok(Schema::new(fields))
    }

    /// Column names, in order, with their descriptions' `unit` (if any).
    pub fn column_names(&self) -> Vec<String> {
        self.document["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    }
}

fn columns(value: &Value, parameters: &HashMap<&str, i64>) -> Result<Fields> {
    let list = value.as_array().ok_or_else(|| problem("`columns` is not a list"))?;
    list.iter()
        .map(|c| {
            let name = c["name"].as_str().ok_or_else(|| problem(format!("a column without a name: {c}")))?;
            let nullable = c["nullable"].as_bool().unwrap_or(false);
            let data_type =
                data_type(&c["type"], parameters).map_err(|e| problem(format!("column `{name}`: {}", e.problem)))?;
            Ok(Arc::new(Field::new(name, data_type, nullable)))
        })
        .collect::<Result<Vec<_>>>()
        .map(Fields::from)
}

fn data_type(value: &Value, parameters: &HashMap<&str, i64>) -> Result<DataType> {
    if let Some(name) = value.as_str() {
        return primitive(name);
    }
    let item_nullable = value["item_nullable"].as_bool().unwrap_or(true);
    if let Some(item) = value.get("list") {
        return Ok(DataType::List(Arc::new(Field::new_list_field(data_type(item, parameters)?, item_nullable))));
    }
    if let Some(item) = value.get("fixed_size_list") {
        let size =
            size(value["size"].as_str().ok_or_else(|| problem("fixed_size_list without a `size`"))?, parameters)?;
        return Ok(DataType::FixedSizeList(
            Arc::new(Field::new("item", data_type(item, parameters)?, item_nullable)),
            size as i32,
        ));
    }
    if let Some(fields) = value.get("struct") {
        return Ok(DataType::Struct(columns(fields, parameters)?));
    }
    Err(problem(format!("unknown type {value}")))
}

fn primitive(name: &str) -> Result<DataType> {
    Ok(match name {
        "utf8" => DataType::Utf8,
        "binary" => DataType::Binary,
        "int8" => DataType::Int8,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint16" => DataType::UInt16,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        other => {
            let Some(args) = other.strip_prefix("decimal128(").and_then(|r| r.strip_suffix(')')) else {
                return Err(problem(format!("unknown type `{other}`")));
            };
            let expected = || problem(format!("`{other}`: expected decimal128(p,s)"));
            let (p, s) = args.split_once(',').ok_or_else(expected)?;
            DataType::Decimal128(p.trim().parse().map_err(|_| expected())?, s.trim().parse().map_err(|_| expected())?)
        }
    })
}

/// `map_size*map_size` or `16`: a product of parameters and integers.
fn size(expression: &str, parameters: &HashMap<&str, i64>) -> Result<i64> {
    expression
        .split('*')
        .map(|factor| {
            let factor = factor.trim();
            factor.parse::<i64>().or_else(|_| {
                parameters
                    .get(factor)
                    .copied()
                    .ok_or_else(|| problem(format!("size `{expression}`: no value for `{factor}`")))
            })
        })
        .product()
}

/// Names, types and nullability of `schema`, ignoring metadata and the names of list items (which
/// writers and readers spell differently), for comparing against a published schema.
pub fn shape(schema: &Schema) -> Vec<(String, String, bool)> {
    fn describe(data_type: &DataType) -> String {
        match data_type {
            DataType::List(item) => {
                format!("List<{}{}>", describe(item.data_type()), if item.is_nullable() { "?" } else { "" })
            }
            DataType::FixedSizeList(item, n) => format!(
                "FixedSizeList<{}{}; {n}>",
                describe(item.data_type()),
                if item.is_nullable() { "?" } else { "" }
            ),
            DataType::Struct(fields) => {
                format!(
                    "Struct<{}>",
                    fields
                        .iter()
                        .map(|f| format!(
                            "{}: {}{}",
                            f.name(),
                            describe(f.data_type()),
                            if f.is_nullable() { "?" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            other => other.to_string(),
        }
    }
    schema.fields().iter().map(|f| (f.name().clone(), describe(f.data_type()), f.is_nullable())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_file_parses() {
        let parameters = HashMap::from([("map_size", 4)]);
        for (name, _) in PUBLISHED {
            let table = PublishedTable::get(name).unwrap();
            let schema = table.arrow_schema(&parameters).unwrap();
            assert!(!schema.fields().is_empty(), "{name}");
            // Version 2: the scores gained the decision columns, the run manifest its calibration,
            // the maps their grid (compact maps).
            let expected = if ["image_scores", "run_manifest", "pixel_maps"].contains(&name) { 2 } else { 1 };
            assert_eq!(table.schema_version, expected, "{name}");
        }
        let maps = PublishedTable::get("pixel_maps").unwrap().arrow_schema(&parameters).unwrap();
        assert!(matches!(maps.field_with_name("anomaly_map").unwrap().data_type(), DataType::FixedSizeList(_, 16)));
        assert!(
            PublishedTable::get("pixel_maps").unwrap().arrow_schema(&HashMap::new()).is_err(),
            "a size needs its parameter"
        );
    }
}

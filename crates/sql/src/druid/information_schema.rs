//! Druid's `INFORMATION_SCHEMA`: `SCHEMATA`, `TABLES`, `COLUMNS` (with Druid's
//! `JDBC_TYPE`) and `ROUTINES`, with Druid's upper-case names and values, as
//! pydruid's SQLAlchemy dialect and Druid's console read them. Identifiers keep their
//! case, so `INFORMATION_SCHEMA.TABLES` is this schema, and `information_schema.tables`
//! is DataFusion's, which Postgres tools read.
//!
//! Each table is built when a statement reads it, from the session's catalog: the
//! datasources, the session's own views, `sys` and this schema itself.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::types::SqlType;

/// The schema's name.
pub const NAME: &str = "INFORMATION_SCHEMA";

/// The catalog's name in every `*_CATALOG` column.
const CATALOG: &str = "druid";

const TABLES: [&str; 4] = ["COLUMNS", "ROUTINES", "SCHEMATA", "TABLES"];

/// A function, for `ROUTINES`: its name and whether it aggregates.
pub type Routine = (String, bool);

/// Druid's `INFORMATION_SCHEMA` over one session's catalog.
#[derive(Debug)]
pub struct InformationSchema {
    source: Arc<Source>,
}

/// What the tables are built from.
#[derive(Debug)]
struct Source {
    /// The catalog this schema is in (weak: the catalog holds the schema).
    catalog: Weak<dyn CatalogProvider>,
    routines: Arc<Vec<Routine>>,
}

impl InformationSchema {
    pub fn new(catalog: Weak<dyn CatalogProvider>, routines: Arc<Vec<Routine>>) -> Self {
        InformationSchema {
            source: Arc::new(Source { catalog, routines }),
        }
    }
}

/// One of the schema's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Schemata,
    Tables,
    Columns,
    Routines,
}

impl Which {
    fn of(name: &str) -> Option<Which> {
        Some(match name {
            "SCHEMATA" => Which::Schemata,
            "TABLES" => Which::Tables,
            "COLUMNS" => Which::Columns,
            "ROUTINES" => Which::Routines,
            _ => return None,
        })
    }

    /// The table's columns: those of a table without rows.
    fn schema(self) -> Result<SchemaRef> {
        let empty = match self {
            Which::Schemata => schemata(&[])?,
            Which::Tables => tables(&[])?,
            Which::Columns => columns(&[])?,
            Which::Routines => routines(&[])?,
        };
        Ok(empty.schema())
    }
}

/// A row of `TABLES`.
struct TableRow {
    schema: String,
    name: String,
    kind: &'static str,
}

/// A row of `COLUMNS` before it is typed.
struct ColumnRow {
    schema: String,
    table: String,
    /// From 1.
    position: i64,
    field: Field,
}

impl Source {
    fn catalog(&self) -> Result<Arc<dyn CatalogProvider>> {
        self.catalog
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the session's catalog is gone".into()))
    }

    /// Every schema's name, sorted.
    fn schema_names(&self) -> Result<Vec<String>> {
        let mut names = self.catalog()?.schema_names();
        names.sort();
        Ok(names)
    }

    /// Every table: its schema, name and provider, sorted by schema and name. The
    /// providers of this schema's own tables compute nothing until scanned, so
    /// listing them (as `COLUMNS` does) does not list them again.
    async fn tables(&self) -> Result<Vec<(String, String, Arc<dyn TableProvider>)>> {
        let catalog = self.catalog()?;
        let mut out = Vec::new();
        for schema_name in self.schema_names()? {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                // A table that cannot be opened now is left out, not every table.
                match schema.table(&name).await {
                    Ok(Some(table)) => out.push((schema_name.clone(), name, table)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("INFORMATION_SCHEMA leaves out {schema_name}.{name}: {e}")
                    }
                }
            }
        }
        Ok(out)
    }

    async fn rows(&self, which: Which) -> Result<RecordBatch> {
        match which {
            Which::Schemata => schemata(&self.schema_names()?),
            Which::Tables => {
                let rows: Vec<TableRow> = self
                    .tables()
                    .await?
                    .into_iter()
                    .map(|(schema, name, table)| TableRow {
                        kind: match table.table_type() {
                            TableType::View => "VIEW",
                            _ if is_system(&schema) => "SYSTEM_TABLE",
                            _ => "TABLE",
                        },
                        schema,
                        name,
                    })
                    .collect();
                tables(&rows)
            }
            Which::Columns => {
                let mut rows = Vec::new();
                for (schema, table_name, table) in self.tables().await? {
                    for (i, field) in table.schema().fields().iter().enumerate() {
                        rows.push(ColumnRow {
                            schema: schema.clone(),
                            table: table_name.clone(),
                            position: i as i64 + 1,
                            field: field.as_ref().clone(),
                        });
                    }
                }
                columns(&rows)
            }
            Which::Routines => routines(&self.routines),
        }
    }
}

fn schemata(names: &[String]) -> Result<RecordBatch> {
    let n = names.len();
    batch(vec![
        text("CATALOG_NAME", vec![Some(CATALOG.into()); n]),
        text("SCHEMA_NAME", names.iter().cloned().map(Some).collect()),
        text("SCHEMA_OWNER", vec![None; n]),
        text("DEFAULT_CHARACTER_SET_CATALOG", vec![None; n]),
        text("DEFAULT_CHARACTER_SET_SCHEMA", vec![None; n]),
        text("DEFAULT_CHARACTER_SET_NAME", vec![None; n]),
        text("SQL_PATH", vec![None; n]),
    ])
}

fn tables(rows: &[TableRow]) -> Result<RecordBatch> {
    let n = rows.len();
    batch(vec![
        text("TABLE_CATALOG", vec![Some(CATALOG.into()); n]),
        text(
            "TABLE_SCHEMA",
            rows.iter().map(|r| Some(r.schema.clone())).collect(),
        ),
        text(
            "TABLE_NAME",
            rows.iter().map(|r| Some(r.name.clone())).collect(),
        ),
        text(
            "TABLE_TYPE",
            rows.iter().map(|r| Some(r.kind.to_string())).collect(),
        ),
        text("IS_JOINABLE", vec![Some("NO".into()); n]),
        text("IS_BROADCAST", vec![Some("NO".into()); n]),
    ])
}

fn columns(rows: &[ColumnRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let types: Vec<SqlType> = rows
        .iter()
        .map(|r| SqlType::of(r.field.data_type()))
        .collect();
    let texts = |f: &dyn Fn(&ColumnRow) -> String| rows.iter().map(|r| Some(f(r))).collect();
    batch(vec![
        text("TABLE_CATALOG", vec![Some(CATALOG.into()); n]),
        text("TABLE_SCHEMA", texts(&|r| r.schema.clone())),
        text("TABLE_NAME", texts(&|r| r.table.clone())),
        text("COLUMN_NAME", texts(&|r| r.field.name().clone())),
        long(
            "ORDINAL_POSITION",
            rows.iter().map(|r| Some(r.position)).collect(),
        ),
        text("COLUMN_DEFAULT", vec![Some(String::new()); n]),
        text(
            "IS_NULLABLE",
            texts(&|r| if r.field.is_nullable() { "YES" } else { "NO" }.to_string()),
        ),
        text(
            "DATA_TYPE",
            types.iter().map(|t| Some(t.name.to_string())).collect(),
        ),
        text("CHARACTER_MAXIMUM_LENGTH", vec![None; n]),
        text("CHARACTER_OCTET_LENGTH", vec![None; n]),
        long(
            "NUMERIC_PRECISION",
            types.iter().map(|t| t.precision).collect(),
        ),
        long(
            "NUMERIC_PRECISION_RADIX",
            types.iter().map(|t| t.precision.map(|_| 10)).collect(),
        ),
        long(
            "NUMERIC_SCALE",
            types.iter().map(|t| t.precision.map(|_| 0)).collect(),
        ),
        long(
            "DATETIME_PRECISION",
            types.iter().map(|t| t.datetime_precision).collect(),
        ),
        text("CHARACTER_SET_NAME", vec![None; n]),
        text("COLLATION_NAME", vec![None; n]),
        long("JDBC_TYPE", types.iter().map(|t| Some(t.jdbc)).collect()),
    ])
}

fn routines(routines: &[Routine]) -> Result<RecordBatch> {
    let n = routines.len();
    batch(vec![
        text("ROUTINE_CATALOG", vec![Some(CATALOG.into()); n]),
        text("ROUTINE_SCHEMA", vec![Some(NAME.into()); n]),
        text(
            "ROUTINE_NAME",
            routines
                .iter()
                .map(|(name, _)| Some(name.to_uppercase()))
                .collect(),
        ),
        text("ROUTINE_TYPE", vec![Some("FUNCTION".into()); n]),
        text(
            "IS_AGGREGATOR",
            routines
                .iter()
                .map(|(_, aggregates)| Some(if *aggregates { "YES" } else { "NO" }.into()))
                .collect(),
        ),
        text("SIGNATURES", vec![None; n]),
    ])
}

/// Whether the tables of a schema are the system's own.
fn is_system(schema: &str) -> bool {
    matches!(schema, "sys" | NAME | "information_schema" | "pg_catalog")
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(which) = Which::of(name) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(InformationTable {
            which,
            schema: which.schema()?,
            source: Arc::clone(&self.source),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// A table of the schema, whose rows are read from the catalog when it is scanned.
#[derive(Debug)]
struct InformationTable {
    which: Which,
    schema: SchemaRef,
    source: Arc<Source>,
}

#[async_trait]
impl TableProvider for InformationTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = self.source.rows(self.which).await?;
        MemTable::try_new(rows.schema(), vec![vec![rows]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// A named column of text.
fn text(name: &str, values: Vec<Option<String>>) -> (Field, ArrayRef) {
    (
        Field::new(name, DataType::Utf8, true),
        Arc::new(StringArray::from(values)),
    )
}

/// A named column of BIGINT.
fn long(name: &str, values: Vec<Option<i64>>) -> (Field, ArrayRef) {
    (
        Field::new(name, DataType::Int64, true),
        Arc::new(Int64Array::from(values)),
    )
}

fn batch(columns: Vec<(Field, ArrayRef)>) -> Result<RecordBatch> {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, arrays)?)
}

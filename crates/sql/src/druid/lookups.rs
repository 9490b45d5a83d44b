//! Druid's `lookup` schema: each lookup a table of two string columns, `k` and `v`,
//! as of the last statement that named a lookup (a session reads the lookups when a
//! statement mentions one, so statements that do not cost nothing).

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result;

use super::rewrite::Lookups;

/// The schema's name.
pub const NAME: &str = "lookup";

#[derive(Debug, Default)]
pub struct LookupSchema {
    maps: RwLock<Lookups>,
}

impl LookupSchema {
    /// The lookups as read now.
    pub fn set(&self, maps: Lookups) {
        if let Ok(mut current) = self.maps.write() {
            *current = maps;
        }
    }
}

#[async_trait]
impl SchemaProvider for LookupSchema {
    fn table_names(&self) -> Vec<String> {
        self.maps
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(map) = self.maps.read().ok().and_then(|m| m.get(name).cloned()) else {
            return Ok(None);
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Utf8, false),
        ]));
        let (keys, values): (Vec<String>, Vec<String>) = map.into_iter().unzip();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(keys)) as ArrayRef,
                Arc::new(StringArray::from(values)),
            ],
        )?;
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.maps.read().is_ok_and(|m| m.contains_key(name))
    }
}

/// Whether a statement mentions a lookup (the function or the schema), so that it
/// needs them read.
pub fn mentioned(text: &str) -> bool {
    text.to_ascii_lowercase().contains("lookup")
}

//! The SQL engine and its sessions. An [`Engine`] holds what all sessions share: the
//! metadata, the reader of segments and the `druid` (datasources), `sys` and `INFORMATION_SCHEMA` schemas. A [`Session`] is
//! one client's DataFusion context: its settings (`SET ...`) and the views or tables it
//! creates are its own, while the datasources are everyone's. Before each statement
//! the [`Metadata`] is brought up to date (a no-op for a broker, whose view follows the
//! cluster by itself), so newly published segments are visible at once.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement as PlanStatement};
use datafusion::physical_plan::displayable;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use futures::TryStreamExt;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::MetaStore;
use grove_cluster::view::ClusterView;
use grove_segment::scan::SegmentGroupBy;

use crate::auth::ClusterSecret;
use crate::catalog::SegmentCache;
use crate::distributed::{FragmentClient, PlanStages, PushPartialAggregate, ReduceProbes};
use crate::druid::information_schema::{self, InformationSchema, Routine};
use crate::druid::lookups::{self as druid_lookups, LookupSchema};
use crate::druid::rewrite;
use crate::literals::DecimalLiterals;
use crate::metadata::{DirectMetadata, Metadata, ViewMetadata};
use crate::schema::{DatasourceSchema, SysSchema};
use crate::semi_joins::PushSemiJoins;
use crate::settings::GroveSettings;
use crate::table::Reader;
use crate::yielding::YieldingJoins;

/// Druid's names: datasources are `druid.wikipedia` in catalog `druid`.
pub const CATALOG: &str = "druid";
pub const DEFAULT_SCHEMA: &str = "druid";
const SYS_SCHEMA: &str = "sys";

pub struct Engine {
    /// Functions, optimizer rules and default settings; each session starts from a copy.
    template: SessionState,
    datasources: Arc<DatasourceSchema>,
    sys: Arc<SysSchema>,
    metadata: Arc<dyn Metadata>,
    reader: Reader,
    /// The functions sessions have, for `INFORMATION_SCHEMA.ROUTINES`.
    routines: Arc<Vec<Routine>>,
}

impl Engine {
    /// An engine that reads every used segment itself, from local deep storage.
    pub fn direct(store: Arc<dyn MetaStore>, deep: DeepStorage) -> Self {
        let reader = Reader::Local(Arc::new(SegmentCache::new(deep)));
        Self::new(Arc::new(DirectMetadata::new(store)), reader)
    }

    /// A broker's engine: queries see the segments the cluster serves, and read
    /// them on the historicals that serve them, over Flight. Per-segment results of
    /// up to `cache_bytes` are kept (0: no cache). Fragments carry `secret`.
    pub fn broker(
        view: Arc<ClusterView>,
        fragment_deadline: Duration,
        cache_bytes: usize,
        secret: ClusterSecret,
    ) -> Self {
        let mut client = FragmentClient::new(fragment_deadline, secret);
        if cache_bytes > 0 {
            client = client.with_cache(cache_bytes);
        }
        Self::broker_with(view, Arc::new(client))
    }

    /// A broker whose fragments go through `client` (which may run some in this
    /// process).
    pub fn broker_with(view: Arc<ClusterView>, client: Arc<FragmentClient>) -> Self {
        Self::new(Arc::new(ViewMetadata::new(view)), Reader::Remote(client))
    }

    pub fn new(metadata: Arc<dyn Metadata>, reader: Reader) -> Self {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA);
        // `0.07` is the exact number, as in Druid's SQL and Postgres (see `literals`).
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        // Druid's identifiers keep their case: `SELECT countryName FROM wikipedia`.
        config.options_mut().sql_parser.enable_ident_normalization = false;
        // A join's build side is collected into one hash table (and on a cluster sent
        // to the probe side's historicals) up to what a fragment carries: a
        // dimension of a few hundred thousand rows, not DataFusion's 128 Ki rows or
        // 1 MiB.
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold = 32 << 20;
        optimizer.hash_join_single_partition_threshold_rows = 400_000;
        config
            .options_mut()
            .extensions
            .insert(GroveSettings::default());
        let mut template = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_analyzer_rule(Arc::new(DecimalLiterals))
            .with_optimizer_rule(Arc::new(PushSemiJoins));
        if matches!(reader, Reader::Remote(_)) {
            template = template.with_physical_optimizer_rule(Arc::new(PushPartialAggregate));
            template = template.with_physical_optimizer_rule(Arc::new(PlanStages));
        }
        template = template.with_physical_optimizer_rule(Arc::new(YieldingJoins));
        // Where this process scans segments itself.
        template = template.with_physical_optimizer_rule(Arc::new(SegmentGroupBy));
        if matches!(reader, Reader::Remote(_)) {
            // Last: it ties a join's build side to the scan it reduces.
            template = template.with_physical_optimizer_rule(Arc::new(ReduceProbes));
        }
        let mut template = template.build();
        crate::functions::register(&mut template);
        // Every function but the internal slices of shuffles.
        let mut routines: Vec<Routine> = template
            .scalar_functions()
            .keys()
            .filter(|name| name.as_str() != crate::distributed::slice::HASH_SLICE)
            .map(|name| (name.clone(), false))
            .chain(
                template
                    .aggregate_functions()
                    .keys()
                    .map(|name| (name.clone(), true)),
            )
            .collect();
        routines.sort();
        Engine {
            routines: Arc::new(routines),
            template,
            datasources: Arc::new(DatasourceSchema::new(metadata.clone(), reader.clone())),
            sys: Arc::new(SysSchema::new(metadata.clone())),
            metadata,
            reader,
        }
    }

    /// A new session, with default settings and no views of its own.
    pub fn session(&self) -> Session {
        let datasources = Arc::new(SessionSchema {
            datasources: Arc::clone(&self.datasources),
            own: MemorySchemaProvider::new(),
        });
        let catalog: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
        let information_schema =
            InformationSchema::new(Arc::downgrade(&catalog), Arc::clone(&self.routines));
        // Registering into a fresh in-memory catalog cannot fail, and has no previous
        // schema to return.
        let _ = catalog.register_schema(DEFAULT_SCHEMA, datasources);
        let _ = catalog.register_schema(SYS_SCHEMA, Arc::clone(&self.sys) as _);
        let _ = catalog.register_schema(information_schema::NAME, Arc::new(information_schema));
        let lookups = Arc::new(LookupSchema::default());
        let _ = catalog.register_schema(druid_lookups::NAME, Arc::clone(&lookups) as _);
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_string(), catalog);
        let state = SessionStateBuilder::new_from_existing(self.template.clone())
            .with_catalog_list(Arc::new(catalogs))
            .build();
        Session {
            ctx: SessionContext::new_with_state(state),
            metadata: Arc::clone(&self.metadata),
            datasources: Arc::clone(&self.datasources),
            druid_names: false,
            lookups,
        }
    }

    /// The segments this process has mapped, when it reads them itself.
    pub fn segment_cache(&self) -> Option<&SegmentCache> {
        match &self.reader {
            Reader::Local(cache) => Some(cache),
            Reader::Remote(_) => None,
        }
    }

    pub fn metadata(&self) -> &Arc<dyn Metadata> {
        &self.metadata
    }
}

/// One client's DataFusion session over the engine's schemas.
pub struct Session {
    ctx: SessionContext,
    metadata: Arc<dyn Metadata>,
    datasources: Arc<DatasourceSchema>,
    /// Whether result columns without a name are Druid's `EXPR$n`.
    druid_names: bool,
    /// Druid's `lookup` schema, as of the last statement that mentioned a lookup.
    lookups: Arc<LookupSchema>,
}

impl Session {
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// What the session learns of datasources and their segments.
    pub fn metadata(&self) -> &Arc<dyn Metadata> {
        &self.metadata
    }

    /// Names result columns without a name `EXPR$0`, `EXPR$1`, ... by their place in
    /// the select list, as Druid's HTTP API does (other front ends keep DataFusion's
    /// names, such as `count(*)`).
    pub fn with_druid_names(mut self) -> Self {
        self.druid_names = true;
        self
    }

    /// Sets one of the session's settings, as `SET key = value` would.
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        self.ctx
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .set(key, value)
    }

    /// Plans one statement against fresh metadata.
    pub async fn sql(&self, text: &str) -> Result<DataFrame> {
        let statement = self.parse_one(text)?;
        self.run(statement).await
    }

    /// Parses the one statement of `text`, its `?` placeholders numbered `$1`, `$2`,
    /// ... in the order they appear.
    pub fn parse_one(&self, text: &str) -> Result<Statement> {
        let mut statements = self.parse(text)?;
        number_placeholders(&mut statements);
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => Ok(statement),
            (None, _) => Err(DataFusionError::Plan("no SQL statement given".into())),
            (Some(_), false) => Err(DataFusionError::Plan(
                "several statements given where one was expected".into(),
            )),
        }
    }

    /// Runs every statement of `text` in order and answers the rows of the last query
    /// among them (or, with no query, of the last statement): a script that creates a
    /// view, reads it and drops it answers what it read.
    pub async fn script(&self, text: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let (schema, rows) = self.script_stream(text, Vec::new()).await?;
        Ok((schema, rows.try_collect().await?))
    }

    /// [`Session::script`] with `parameters` bound to the `?` placeholders of the
    /// text, in the order they appear (Druid's and JDBC's dynamic parameters), and
    /// the answer's rows as they come. Every statement but the answer runs to
    /// completion in order; the answer is planned in its place and runs as its stream
    /// is read, so statements after it (dropping the view it reads) do not change it.
    pub async fn script_stream(
        &self,
        text: &str,
        parameters: Vec<ScalarValue>,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        if let Some(query) = rewrite::explain_plan_for(text) {
            return self.explain_plan_for(query, parameters).await;
        }
        let mut statements = self.parse(text)?;
        let placeholders = number_placeholders(&mut statements);
        if placeholders != parameters.len() {
            return Err(DataFusionError::Plan(format!(
                "the query has {placeholders} parameter(s) (?), but {} were given",
                parameters.len()
            )));
        }
        let mut query: Option<SendableRecordBatchStream> = None;
        let mut last: Option<(SchemaRef, Vec<RecordBatch>)> = None;
        for statement in statements {
            let mut plan = self.plan(statement).await?;
            if !parameters.is_empty() {
                plan = plan.with_param_values(parameters.clone())?;
            }
            let is_query = returns_rows(&plan);
            let frame = self.run_plan(plan).await?;
            if is_query {
                // An earlier query is not the answer, but still runs to completion.
                if let Some(earlier) = query.take() {
                    let _: Vec<RecordBatch> = earlier.try_collect().await?;
                }
                query = Some(frame.execute_stream().await?);
            } else {
                let schema = Arc::new(frame.schema().as_arrow().clone());
                last = Some((schema, frame.collect().await?));
            }
        }
        match (query, last) {
            (Some(rows), _) => Ok((rows.schema(), rows)),
            (None, Some((schema, batches))) => {
                let rows = futures::stream::iter(batches.into_iter().map(Ok));
                let stream: SendableRecordBatchStream =
                    Box::pin(RecordBatchStreamAdapter::new(schema.clone(), rows));
                Ok((schema, stream))
            }
            (None, None) => Err(DataFusionError::Plan("no SQL statement given".into())),
        }
    }

    /// Druid's `EXPLAIN PLAN FOR query`: one row of the plan (`PLAN`), the
    /// datasources it reads (`RESOURCES`, as JSON) and what kind of statement it is
    /// (`ATTRIBUTES`).
    async fn explain_plan_for(
        &self,
        query: &str,
        parameters: Vec<ScalarValue>,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let mut statements = self.parse(query)?;
        number_placeholders(&mut statements);
        let (Some(statement), true) = (statements.pop(), statements.is_empty()) else {
            return Err(DataFusionError::Plan(
                "EXPLAIN PLAN FOR takes one query".into(),
            ));
        };
        let mut plan = self.plan(statement).await?;
        if !parameters.is_empty() {
            plan = plan.with_param_values(parameters)?;
        }
        if !returns_rows(&plan) {
            return Err(DataFusionError::Plan(
                "EXPLAIN PLAN FOR takes a query".into(),
            ));
        }
        let mut tables = std::collections::BTreeSet::new();
        plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.insert(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let frame = self.run_plan(plan).await?;
        let logical = frame.logical_plan().display_indent().to_string();
        let physical = frame.create_physical_plan().await?;
        let physical = displayable(physical.as_ref()).indent(true).to_string();
        let resources: Vec<serde_json::Value> = tables
            .into_iter()
            .map(|name| serde_json::json!({"name": name, "type": "DATASOURCE"}))
            .collect();
        let row = [
            (
                "PLAN",
                format!("logical_plan\n{logical}\nphysical_plan\n{physical}"),
            ),
            ("RESOURCES", serde_json::Value::from(resources).to_string()),
            (
                "ATTRIBUTES",
                serde_json::json!({"statementType": "SELECT"}).to_string(),
            ),
        ];
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            row.iter()
                .map(|(name, _)| {
                    datafusion::arrow::datatypes::Field::new(*name, DataType::Utf8, false)
                })
                .collect::<Vec<_>>(),
        ));
        let columns = row
            .into_iter()
            .map(|(_, value)| Arc::new(StringArray::from(vec![value])) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let rows = futures::stream::iter([Ok(batch)]);
        let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema) as SchemaRef,
            rows,
        ));
        Ok((schema, stream))
    }

    /// A datasource of schema `druid` to build a plan on (as Druid's native queries
    /// do), read against fresh metadata.
    pub async fn datasource(&self, name: &str) -> Result<DataFrame> {
        self.metadata
            .refresh()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.ctx
            .table(datafusion::common::TableReference::full(
                CATALOG,
                DEFAULT_SCHEMA,
                name,
            ))
            .await
    }

    /// Runs one statement to completion.
    pub async fn execute(&self, text: &str) -> Result<Vec<RecordBatch>> {
        self.sql(text).await?.collect().await
    }

    fn parse(&self, text: &str) -> Result<Vec<Statement>> {
        let state = self.ctx.state();
        let options = &state.config().options().sql_parser;
        let dialect = dialect_from_str(options.dialect).ok_or_else(|| {
            DataFusionError::Plan(format!("unsupported SQL dialect {}", options.dialect))
        })?;
        let statements = DFParserBuilder::new(text)
            .with_dialect(dialect.as_ref())
            .with_recursion_limit(options.recursion_limit.get())
            .build()?
            .parse_statements()?;
        Ok(statements.into())
    }

    async fn run(&self, statement: Statement) -> Result<DataFrame> {
        let plan = self.plan(statement).await?;
        self.run_plan(plan).await
    }

    /// Runs a plan from [`Session::plan`] (its parameters bound): a query's rows, or the
    /// effect of a statement (a view created, a setting changed).
    pub async fn run_plan(&self, plan: LogicalPlan) -> Result<DataFrame> {
        self.ctx.execute_logical_plan(plan).await
    }

    /// Plans one parsed statement against fresh metadata, refusing what a session may
    /// not run.
    pub async fn plan(&self, mut statement: Statement) -> Result<LogicalPlan> {
        interval_precision(&mut statement)?;
        // Names first: what the query wrote decides which columns are unnamed.
        if self.druid_names {
            rewrite::name_expressions(&mut statement);
        }
        let lookups = if druid_lookups::mentioned(&statement.to_string()) {
            let maps = self
                .metadata
                .lookups()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            self.lookups.set(maps.clone());
            maps
        } else {
            Default::default()
        };
        rewrite::statement(&mut statement, &lookups)?;
        self.metadata
            .refresh()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        allowed(&plan)?;
        if let LogicalPlan::Ddl(DdlStatement::DropTable(drop)) = &plan
            && drop.name.schema().is_none_or(|s| s == DEFAULT_SCHEMA)
            && self.datasources.table_exist(drop.name.table())
        {
            return Err(DataFusionError::Plan(format!(
                "{:?} is a datasource: it is dropped by marking its segments unused, \
                 not from SQL",
                drop.name.table()
            )));
        }
        Ok(plan)
    }
}

/// Whether a plan answers rows: a query, `EXPLAIN`, `EXECUTE` of a prepared
/// statement; not a `SET` or a view created, whose effect is on the session.
pub fn returns_rows(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Ddl(_) => false,
        LogicalPlan::Statement(PlanStatement::Execute(_)) => true,
        LogicalPlan::Statement(_) => false,
        _ => true,
    }
}

/// `INTERVAL '90' DAY (3)`, as in TPC-H's query text: the standard's leading-field
/// precision only bounds the number of digits of the value. DataFusion refuses it, so
/// a value that fits is planned without it, and one that does not is an error.
fn interval_precision(statement: &mut Statement) -> Result<()> {
    let sql = match statement {
        Statement::Statement(sql) => sql,
        Statement::Explain(explain) => return interval_precision(&mut explain.statement),
        _ => return Ok(()),
    };
    let mut failure = None;
    let _ = visit_expressions_mut(sql.as_mut(), |expr| {
        if let Expr::Interval(interval) = expr
            && let Some(precision) = interval.leading_precision
        {
            let digits = match interval.value.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(text) | Value::Number(text, _) => text
                        .trim()
                        .trim_start_matches(['-', '+'])
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .count(),
                    _ => 0,
                },
                _ => 0,
            };
            if u64::try_from(digits).is_ok_and(|d| d <= precision) {
                interval.leading_precision = None;
            } else {
                failure = Some(format!(
                    "interval {} has more digits than its precision ({precision})",
                    interval.value
                ));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match failure {
        Some(message) => Err(DataFusionError::Plan(message)),
        None => Ok(()),
    }
}

/// Numbers the `?` placeholders of `statements` `$1`, `$2`, ... in the order they
/// appear; returns how many there are.
fn number_placeholders(statements: &mut [Statement]) -> usize {
    let mut count = 0;
    for statement in statements {
        let sql = match statement {
            Statement::Statement(sql) => sql,
            Statement::Explain(explain) => match explain.statement.as_mut() {
                Statement::Statement(sql) => sql,
                _ => continue,
            },
            _ => continue,
        };
        let _ = visit_expressions_mut(sql.as_mut(), |expr| {
            if let Expr::Value(v) = expr
                && let Value::Placeholder(name) = &mut v.value
                && name == "?"
            {
                count += 1;
                *name = format!("${count}");
            }
            ControlFlow::<()>::Continue(())
        });
    }
    count
}

/// What a session may run: queries, `EXPLAIN`, `SET`/`SHOW`, and views and in-memory
/// tables of its own. Writing files (`COPY`, `INSERT`) or reading them
/// (`CREATE EXTERNAL TABLE`) would reach the server's file system, so both are refused.
fn allowed(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new().with_allow_dml(false).verify_plan(plan)?;
    if let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) = plan {
        return Err(DataFusionError::Plan(
            "CREATE EXTERNAL TABLE is not supported: Grove queries its datasources; \
             load files with `grove ingest`"
                .into(),
        ));
    }
    Ok(())
}

/// A session's `druid` schema: the shared datasources, plus the views and tables the
/// session itself created, which no other session sees. A session cannot shadow a
/// datasource (nor drop one: [`Session`] refuses that before DataFusion would report it
/// as missing).
#[derive(Debug)]
struct SessionSchema {
    datasources: Arc<DatasourceSchema>,
    own: MemorySchemaProvider,
}

#[async_trait]
impl SchemaProvider for SessionSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.datasources.table_names();
        names.extend(self.own.table_names());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.own.table(name).await? {
            Some(table) => Ok(Some(table)),
            None => self.datasources.table(name).await,
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.datasources.table_exist(&name) {
            return Err(DataFusionError::Plan(format!(
                "{name:?} is a datasource; choose another name"
            )));
        }
        self.own.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.own.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.own.table_exist(name) || self.datasources.table_exist(name)
    }
}

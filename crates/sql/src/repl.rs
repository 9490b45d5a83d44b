//! The interactive shell: statements end with `;` and may span lines; backslash
//! commands (`\d`, `\d NAME`, `\timing`, `\q`) act at once. An error is printed and the
//! shell goes on. History is kept in `~/.grove_history`. Statements run in a local
//! [`Session`] or, over Flight SQL, on a server
//! ([`Remote`](crate::flight_sql::client::Remote)).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::engine::Session;
use crate::output::{self, Format};

/// Where the shell's statements run.
#[async_trait]
pub trait Statements: Send + Sync {
    /// Runs one statement: its rows, or the error to print.
    async fn query(&self, text: &str)
    -> std::result::Result<(SchemaRef, Vec<RecordBatch>), String>;
}

#[async_trait]
impl Statements for Session {
    async fn query(
        &self,
        text: &str,
    ) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), String> {
        let frame = self.sql(text).await.map_err(|e| e.to_string())?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(|e| e.to_string())?;
        Ok((schema, batches))
    }
}

pub struct Repl<'a> {
    session: &'a dyn Statements,
    format: Format,
    timing: bool,
}

/// What one line of input asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Quit,
    Timing,
    ListTables,
    Describe(String),
    Help,
    Unknown(String),
}

fn parse_command(line: &str) -> Command {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q" | "\\quit"), _) => Command::Quit,
        (Some("\\timing"), _) => Command::Timing,
        (Some("\\d"), None) => Command::ListTables,
        (Some("\\d"), Some(name)) => Command::Describe(name.trim_end_matches(';').to_string()),
        (Some("\\?" | "\\h" | "\\help"), _) => Command::Help,
        _ => Command::Unknown(line.to_string()),
    }
}

const HELP: &str = "\\d             list tables
\\d NAME        describe a table
\\timing        toggle timing of statements
\\q             quit
Statements end with ';' and may span several lines.";

impl<'a> Repl<'a> {
    pub fn new(session: &'a dyn Statements, format: Format) -> Self {
        Repl {
            session,
            format,
            timing: false,
        }
    }

    pub async fn run(&mut self) -> Result<()> {
        let mut editor = DefaultEditor::new().map_err(external)?;
        let history = history_path();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        println!("Grove SQL. End statements with ';'. \\? for help, \\q to quit.");
        let mut statement = String::new();
        loop {
            let prompt = if statement.is_empty() {
                "grove> "
            } else {
                "  ...> "
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => {
                    statement.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(external(e)),
            };
            let trimmed = line.trim();
            if statement.is_empty() && trimmed.starts_with('\\') {
                let _ = editor.add_history_entry(trimmed);
                if !self.command(parse_command(trimmed)).await {
                    break;
                }
                continue;
            }
            if trimmed.is_empty() && statement.is_empty() {
                continue;
            }
            statement.push_str(&line);
            statement.push('\n');
            if trimmed.ends_with(';') {
                let text = std::mem::take(&mut statement);
                let _ = editor.add_history_entry(text.trim());
                self.statement(&text).await;
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(())
    }

    /// Runs a backslash command; false means quit.
    async fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return false,
            Command::Timing => {
                self.timing = !self.timing;
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            Command::ListTables => {
                self.statement(
                    "SELECT table_schema, table_name, table_type FROM information_schema.tables \
                     WHERE table_schema NOT IN ('information_schema', 'INFORMATION_SCHEMA') ORDER BY table_schema, table_name",
                )
                .await
            }
            Command::Describe(name) => {
                let (schema, table) = match name.split_once('.') {
                    Some((s, t)) => (s.to_string(), t.to_string()),
                    None => (crate::engine::DEFAULT_SCHEMA.to_string(), name.clone()),
                };
                self.statement(&format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                     WHERE table_schema = '{}' AND table_name = '{}' ORDER BY ordinal_position",
                    schema.replace('\'', "''"),
                    table.replace('\'', "''")
                ))
                .await
            }
            Command::Help => println!("{HELP}"),
            Command::Unknown(line) => eprintln!("Unknown command {line:?}; \\? lists commands."),
        }
        true
    }

    async fn statement(&self, text: &str) {
        let started = Instant::now();
        match run_statement(self.session, text, self.format, &mut std::io::stdout()).await {
            Ok(rows) => {
                if self.timing {
                    println!(
                        "{rows} row(s) in {:.3} ms",
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                }
            }
            Err(e) => eprintln!("Error: {e}"),
        }
    }
}

/// Runs one statement and writes its result; returns the number of rows.
pub async fn run_statement(
    session: &dyn Statements,
    text: &str,
    format: Format,
    out: &mut dyn Write,
) -> std::result::Result<usize, String> {
    let (schema, batches) = session.query(text).await?;
    output::write(out, format, &schema, &batches).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".grove_history"))
}

fn external(
    e: impl std::error::Error + Send + Sync + 'static,
) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslash_commands_parse() {
        assert_eq!(parse_command("\\q"), Command::Quit);
        assert_eq!(parse_command("\\d"), Command::ListTables);
        assert_eq!(
            parse_command("\\d events;"),
            Command::Describe("events".into())
        );
        assert_eq!(parse_command("\\timing"), Command::Timing);
        assert!(matches!(parse_command("\\x"), Command::Unknown(_)));
    }
}

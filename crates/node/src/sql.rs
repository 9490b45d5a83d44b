//! `grove sql`: statements from `-c` / `-f`, or the interactive shell, on a data
//! directory or on a server over Flight SQL.

use std::path::{Path, PathBuf};

use grove_sql::Engine;
use grove_sql::flight_sql::client::Remote;
use grove_sql::output::Format;
use grove_sql::repl::{Repl, Statements, run_statement};

use crate::CliResult;
use crate::data_dir::DataDir;

/// Where statements run.
pub enum Source {
    Local(PathBuf),
    /// `--connect URL`.
    Remote {
        url: String,
        password: Option<String>,
        tls_ca: Option<PathBuf>,
    },
}

pub async fn run(
    source: Source,
    commands: &[String],
    file: Option<&Path>,
    format: Format,
) -> CliResult<()> {
    match source {
        Source::Local(data_dir) => {
            let dir = DataDir::new(&data_dir);
            let engine = Engine::direct(dir.open_for_reading()?, dir.deep_storage()?);
            run_on(&engine.session(), commands, file, format).await
        }
        Source::Remote {
            url,
            password,
            tls_ca,
        } => {
            let remote = Remote::connect(&url, tls_ca.as_deref(), password.as_deref()).await?;
            run_on(&remote, commands, file, format).await
        }
    }
}

async fn run_on(
    session: &dyn Statements,
    commands: &[String],
    file: Option<&Path>,
    format: Format,
) -> CliResult<()> {
    let mut statements: Vec<String> = commands.to_vec();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        statements.extend(split_statements(&text));
    }
    if statements.is_empty() {
        return Ok(Repl::new(session, format).run().await?);
    }
    let mut out = std::io::stdout();
    for statement in &statements {
        run_statement(session, statement, format, &mut out).await?;
    }
    Ok(())
}

/// Splits a script on `;` outside quotes and comments, dropping empty statements.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '-') if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                current.push('\n');
                continue;
            }
            (None, ';') => {
                if !current.trim().is_empty() {
                    statements.push(current.trim().to_string());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn scripts_split_on_semicolons_outside_quotes_and_comments() {
        let script = "SELECT 'a;b';\n-- a comment; with a semicolon\nSELECT 2 ;\n\n;";
        assert_eq!(split_statements(script), ["SELECT 'a;b'", "SELECT 2"]);
    }
}

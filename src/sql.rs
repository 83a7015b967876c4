//! `strata sql`: one query, or an interactive prompt, over the catalog's history.

use std::io::Write as _;
use std::sync::Arc;

use arrow::array::RecordBatch;
use strata_query::StrataContext;

use crate::cli::OutputFormat;
use crate::config::Config;
use crate::storage::Storage;

/// History file of the interactive prompt, under `$HOME`.
const HISTORY_FILE: &str = ".strata_history";

/// Runs `query` (or, without one, an interactive prompt) and prints results in `format`.
pub(crate) async fn sql(
    config: &Config,
    query: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let storage = Storage::open(&config.storage)?;
    let catalog = storage.catalog().await?;
    let strata = StrataContext::new(Arc::new(catalog), Arc::clone(&storage.store))?;
    match query {
        Some(query) => run(&strata, &query, format).await,
        None => prompt(&strata, format).await,
    }
}

async fn run(strata: &StrataContext, query: &str, format: OutputFormat) -> anyhow::Result<()> {
    let batches = strata.query(query).await?;
    print(&batches, format)
}

fn print(batches: &[RecordBatch], format: OutputFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(batches)?
            )?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The interactive prompt: one statement per line, `\q` (or Ctrl-D) quits, errors are
/// printed and the prompt goes on. History in `~/.strata_history`.
async fn prompt(strata: &StrataContext, format: OutputFormat) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;

    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(HISTORY_FILE));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    eprintln!(
        "strata sql: tables {}; as_of('ns.table', t), changes('ns.table', t1, t2); \\q quits",
        strata.table_names().join(", ")
    );
    loop {
        let line = tokio::task::block_in_place(|| editor.readline("strata> "));
        match line {
            Ok(line) => {
                let statement = line.trim();
                if statement.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(statement);
                if statement == "\\q" || statement == "quit" || statement == "exit" {
                    break;
                }
                if let Err(e) = run(strata, statement, format).await {
                    eprintln!("error: {e:#}");
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

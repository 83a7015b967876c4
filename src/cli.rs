//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// strata keeps the complete change history of operational databases and answers, in SQL, what a
/// table looked like at any moment and what changed between two moments.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
#[command(
    after_help = "Configuration: --config FILE, else $STRATA_CONFIG, else ./strata.toml if \
                        present, else built-in defaults (print them with `strata config --defaults`). \
                        Any key can be overridden as STRATA_<SECTION>__<KEY>."
)]
pub(crate) struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "STRATA_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// strata's subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the configured capture sources and the compactor until interrupted (Ctrl-C / SIGTERM).
    Run,
    /// Query history in SQL: `public.orders`, `as_of('public.orders', TIMESTAMP '…')`,
    /// `changes('public.orders', t1, t2)`. With no query, opens an interactive prompt.
    Sql {
        /// The query; omit it for the interactive prompt.
        query: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Put a table's state as of a moment, or the changes of a range, back into a live database.
    Restore {
        /// The table, as `namespace.table`.
        #[arg(long)]
        table: String,
        /// Restore the state as of this moment (RFC 3339, e.g. 2026-11-25T10:00:00Z).
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Target database URL (defaults to the source's own).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
    /// Export a table's state as of a moment in a format the source's own tools load.
    Export {
        /// The table, as `namespace.table`.
        #[arg(long)]
        table: String,
        /// The moment (RFC 3339); default: now.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Output file or directory.
        #[arg(long, short, value_name = "PATH")]
        out: PathBuf,
    },
    /// Show capture positions, lag and the catalog's watermarks.
    Status,
    /// Delete segment and snapshot files that no catalog commit references (left by a
    /// compactor or snapshot build stopped between writing and committing them, replaced by
    /// a coalesced segment, or of a thinned snapshot).
    Gc {
        /// Keep unreferenced files younger than this (a flush or snapshot may be committing
        /// them right now), and replaced segments and thinned snapshots whose removal is
        /// younger than this (a query of an older catalog version may be reading them). Below
        /// 10m it is refused without --unsafe-allow-short-grace (a dry run takes any).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete with an --older-than below 10m. Safe only while nothing writes to this
        /// storage (no compactor, snapshot build or coalescer): a file written but not yet
        /// committed would be deleted, and its commit would name a missing file.
        #[arg(long)]
        unsafe_allow_short_grace: bool,
    },
    /// Check that the configured Kafka, object store and sources are reachable and set up right.
    Check,
    /// Print the effective configuration (secrets hidden).
    Config {
        /// Print the documented defaults instead (a starting point for strata.toml).
        #[arg(long)]
        defaults: bool,
    },
}

/// How `strata sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn gc_help_states_the_grace_floor() {
        let floor = humantime::format_duration(crate::gc::MIN_OLDER_THAN).to_string();
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("gc")
            .unwrap()
            .render_long_help()
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.contains(&format!("Below {floor}"))
                && help.contains(&format!("below {floor}"))
                && help.contains("--unsafe-allow-short-grace"),
            "{help}"
        );
    }
}

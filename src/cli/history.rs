//! `sipsentry history`: query or export the decision history.

use super::ConfigArg;
use crate::error::Result;
use crate::history::export::{self, Format};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// From this time (2026-11-21T10:00:00Z, 2026-11-21, or epoch ms).
    #[arg(long)]
    pub from: Option<String>,
    /// Until this time (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this caller (normalised to E.164).
    #[arg(long)]
    pub number: Option<String>,
    /// Only this action: pass, tag, divert, reject.
    #[arg(long)]
    pub action: Option<String>,
    /// At most K rows, newest first (table default 50; csv/json without
    /// a limit export every row, oldest first).
    #[arg(long, value_name = "K")]
    pub limit: Option<u64>,
    /// Output format, written to standard output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: HistoryFormat,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HistoryFormat {
    Table,
    Csv,
    Json,
}

pub fn run(args: HistoryArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let config = args.config.load()?;
    let filter = export::filter(
        &config.country()?,
        args.from.as_deref(),
        args.to.as_deref(),
        args.number.as_deref(),
        args.action.as_deref(),
    )?;
    let format = match args.format {
        HistoryFormat::Table => Format::Table,
        HistoryFormat::Csv => Format::Csv,
        HistoryFormat::Json => Format::Json,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let store = crate::app::history_store(&config, runtime.handle().clone())?;
    export::write_rows(&store, &filter, args.limit, format, &mut out)?;
    Ok(())
}

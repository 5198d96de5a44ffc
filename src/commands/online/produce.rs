//! `tern produce`: each line of stdin (or a file) becomes one record of a topic's partition.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use tern_net::kafka_client::{Acks, Producer};

use super::{Out, ServerArgs};
use crate::error::{CliError, CliResult, EXIT_CLEAN};
use crate::Common;

/// Bound on the bytes of one batch, well under the server's request limit.
const BATCH_BYTES_MAX: usize = 512 << 10;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to append to.
    pub topic: String,
    /// Partition to append to.
    #[arg(long, default_value_t = 0)]
    pub partition: i32,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Acknowledgement: `all` (committed on a majority), `1` (durable on the leader) or `0`
    /// (not acknowledged at all).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Records per batch at most (a terminal sends each line at once).
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
    /// Turn off the idempotent producer (acks=all only): a retry after a lost answer may
    /// then store a batch twice.
    #[arg(long)]
    pub no_idempotence: bool,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    Acks::parse(text).ok_or_else(|| format!("{text:?} is not one of all, 1, 0"))
}

#[derive(Serialize, Default)]
struct Summary {
    topic: String,
    partition: i32,
    records: u64,
    batches: u64,
    /// Offsets of the first and last record produced (unknown with acks=0).
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

pub fn run(a: ProduceArgs) -> CliResult<u8> {
    let (reader, interactive): (Box<dyn BufRead>, bool) = match &a.file {
        Some(path) => (
            Box::new(BufReader::new(
                File::open(path).map_err(|e| CliError::io(path, e))?,
            )),
            false,
        ),
        None => {
            let stdin = io::stdin();
            let interactive = stdin.is_terminal();
            (Box::new(stdin.lock()), interactive)
        }
    };
    let source = a.file.clone().unwrap_or_else(|| PathBuf::from("<stdin>"));
    let client = a.server.connect()?;
    let mut producer = Producer::new(client, a.acks, !a.no_idempotence)?;
    let partitions = producer.client().partition_count(&a.topic)?;
    if a.partition < 0 || a.partition as usize >= partitions {
        return Err(CliError::Usage(format!(
            "topic {} has partitions 0..{}; --partition {} is not one of them",
            a.topic,
            partitions.saturating_sub(1),
            a.partition
        )));
    }
    let batch_records_max = if interactive {
        1
    } else {
        a.batch_records.max(1)
    };
    let mut summary = Summary {
        topic: a.topic.clone(),
        partition: a.partition,
        ..Summary::default()
    };
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut lines = reader.split(b'\n');
    loop {
        let line = match lines.next() {
            Some(line) => Some(line.map_err(|e| CliError::io(&source, e))?),
            None => None,
        };
        let end = line.is_none();
        if let Some(mut line) = line {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            batch_bytes += line.len();
            batch.push(line);
        }
        let full = batch.len() >= batch_records_max || batch_bytes >= BATCH_BYTES_MAX;
        if !batch.is_empty() && (full || end) {
            let values: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let ack = producer.send(&a.topic, a.partition, &values)?;
            if let Some(base) = ack.base_offset {
                summary.first_offset.get_or_insert(base);
                summary.last_offset = Some(base + values.len() as i64 - 1);
            }
            summary.records += values.len() as u64;
            summary.batches += 1;
            batch.clear();
            batch_bytes = 0;
        }
        if end {
            break;
        }
    }
    let mut out = Out::new();
    if a.common.json {
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| CliError::Usage(format!("JSON encoding failed: {e}")))?;
        out.line(&text)?;
    } else {
        let offsets = match (summary.first_offset, summary.last_offset) {
            (Some(f), Some(l)) => format!(" at offsets {f}..={l}"),
            _ => String::new(),
        };
        out.line(&format!(
            "produced {} records to {}-{}{}",
            summary.records, summary.topic, summary.partition, offsets
        ))?;
    }
    out.flush()?;
    Ok(EXIT_CLEAN)
}

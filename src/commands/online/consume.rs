//! `tern consume`: prints the records of a topic's partition from an offset, one per line
//! (with --json, one JSON object per line), up to the end at start or, with --follow, as they
//! arrive.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tern_net::kafka_client::{FetchOptions, OffsetSpec};

use super::{Out, ServerArgs};
use crate::error::{CliError, CliResult, EXIT_CLEAN};
use crate::Common;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Partition to read.
    #[arg(long, default_value_t = 0)]
    pub partition: i32,
    /// Where to start: `beginning`, `end`, or an offset.
    #[arg(long, default_value = "beginning")]
    pub offset: String,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

/// One record with --json. `value` is the bytes as UTF-8 (invalid sequences replaced).
#[derive(Serialize)]
struct RecordJson<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<String>,
    value: Option<String>,
}

pub fn run(a: ConsumeArgs) -> CliResult<u8> {
    let mut client = a.server.connect()?;
    let partitions = client.partition_count(&a.topic)?;
    if a.partition < 0 || a.partition as usize >= partitions {
        return Err(CliError::Usage(format!(
            "topic {} has partitions 0..{}; --partition {} is not one of them",
            a.topic,
            partitions.saturating_sub(1),
            a.partition
        )));
    }
    let mut offset = match a.offset.as_str() {
        "beginning" => client.list_offset(&a.topic, a.partition, OffsetSpec::Earliest)?,
        "end" => client.list_offset(&a.topic, a.partition, OffsetSpec::Latest)?,
        n => n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            CliError::Usage(format!(
                "--offset {n:?} is not `beginning`, `end` or an offset (a number ≥ 0)"
            ))
        })?,
    };
    // Without --follow the command stops at the end as it was when it started.
    let end = if a.follow {
        None
    } else {
        Some(client.list_offset(&a.topic, a.partition, OffsetSpec::Latest)?)
    };
    let options = FetchOptions {
        max_wait: if a.follow {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        },
        ..FetchOptions::default()
    };
    let mut out = Out::new();
    let mut printed = 0u64;
    loop {
        if end.is_some_and(|end| offset >= end) || a.count.is_some_and(|c| printed >= c) {
            break;
        }
        let fetched = client.fetch(&a.topic, a.partition, offset, options)?;
        for r in &fetched.records {
            if end.is_some_and(|end| r.offset >= end) || a.count.is_some_and(|c| printed >= c) {
                break;
            }
            let alive = if a.common.json {
                let doc = RecordJson {
                    topic: &a.topic,
                    partition: a.partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r
                        .key
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: r
                        .value
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                };
                let text = serde_json::to_string(&doc)
                    .map_err(|e| CliError::Usage(format!("JSON encoding failed: {e}")))?;
                out.line(&text)?
            } else {
                out.write(r.value.as_deref().unwrap_or_default())? && out.write(b"\n")?
            };
            if !alive {
                return Ok(EXIT_CLEAN);
            }
            printed += 1;
        }
        let next = fetched.next_offset(offset);
        if next == offset && fetched.records.is_empty() {
            if !a.follow {
                // The end moved back (a truncation) or the log starts later: stop.
                if fetched.high_watermark <= offset {
                    break;
                }
                if fetched.log_start_offset > offset {
                    offset = fetched.log_start_offset;
                    continue;
                }
                break;
            }
            if !out.flush()? {
                return Ok(EXIT_CLEAN);
            }
        }
        offset = next;
    }
    out.flush()?;
    Ok(EXIT_CLEAN)
}

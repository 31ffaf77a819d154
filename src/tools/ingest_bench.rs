//! `caravan bench`'s file scenario: the real `caravan ingest` (a separate
//! process) loads JSON Lines and Comtrade CSV files of `caravan gen`, plain
//! and gzip, into a fresh server, and the same events go in again through the
//! server-only Append scenario (batches of 1,000, 4 feeds, built before the
//! clock starts) on a fresh server, interleaved, so the two compare within
//! one run. Reports the client's own CPU time per event and peak RSS, from
//! its summary, and the server's CPU time per event (this process's: the
//! server is the only thing running in it during a file pass).
//!
//! Depends on the server, the bench's passes and the ingest client's
//! reader; never on the storage internals.

use super::bench::{pass_to, Mode, Scenario};
use crate::grpc::server::{self, ServerConfig};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One file pass, from the client's summary.
struct FilePass {
    events: u64,
    rate: f64,
    cpu_us_per_event: f64,
    peak_rss_mib: f64,
    /// The server's CPU per event (this process's, while only the server
    /// runs in it).
    server_cpu_us_per_event: f64,
}

fn caravan() -> Result<std::process::Command, Box<dyn Error>> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.env("RUST_LOG", "warn");
    Ok(command)
}

/// Writes `lines` records of `caravan gen --seed 1` in `format`, and a gzip
/// copy of it.
fn generate(dir: &Path, lines: usize, format: &str) -> Result<(PathBuf, PathBuf), Box<dyn Error>> {
    let plain = dir.join(format!("gen.{format}"));
    let status = caravan()?
        .args(["gen", "--seed", "1", "--format", format, "--records"])
        .arg(lines.to_string())
        .arg("--out")
        .arg(&plain)
        .status()?;
    if !status.success() {
        return Err(format!("caravan gen --format {format} failed").into());
    }
    let gz = dir.join(format!("gen.{format}.gz"));
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz)?, flate2::Compression::fast());
    std::io::copy(&mut std::fs::File::open(&plain)?, &mut encoder)?;
    encoder.finish()?;
    Ok((plain, gz))
}

async fn server_only(events: &[crate::proto::v1::Event]) -> Result<f64, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let server = server::start(ServerConfig::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("store"),
    ))
    .await?;
    let scenario = Scenario {
        name: "server only".into(),
        mode: Mode::Unary { batch: 1000 },
        feeds: 4,
        events: events.len(),
        duplicates: false,
    };
    let m = pass_to(&[format!("http://{}", server.addr())], &scenario, events).await?;
    server.shutdown().await?;
    Ok(m.events as f64 / m.elapsed.as_secs_f64())
}

async fn file_pass(file: &Path) -> Result<FilePass, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let server = server::start(ServerConfig::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("store"),
    ))
    .await?;
    let mut command = caravan()?;
    command
        .args(["ingest", "--server"])
        .arg(format!("http://{}", server.addr()))
        .arg(file);
    let cpu_before = super::client::ingest::cpu_time();
    let start = Instant::now();
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    let elapsed = start.elapsed();
    let server_cpu = cpu_before
        .zip(super::client::ingest::cpu_time())
        .map_or(f64::NAN, |(before, after)| (after - before).as_secs_f64());
    server.shutdown().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "caravan ingest {}: {text}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // "stored S, duplicates D, rejected R in …" and
    // "client: C s CPU (U µs per event), peak RSS M MiB, …"
    let numbers = |line: &str| -> Vec<f64> {
        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let mut lines = text.lines();
    let counts = numbers(lines.next().unwrap_or_default());
    let client = numbers(lines.next().unwrap_or_default());
    let events = counts.iter().take(3).sum::<f64>() as u64;
    Ok(FilePass {
        events,
        rate: events as f64 / elapsed.as_secs_f64(),
        cpu_us_per_event: client.get(1).copied().unwrap_or(f64::NAN),
        peak_rss_mib: client.get(2).copied().unwrap_or(f64::NAN),
        server_cpu_us_per_event: server_cpu * 1e6 / events.max(1) as f64,
    })
}

/// One input against its server-only figure: a table row and its JSON.
fn row(
    table: &mut comfy_table::Table,
    label: &str,
    pass: &FilePass,
    server_rate: f64,
) -> serde_json::Value {
    let ratio = pass.rate / server_rate;
    eprintln!(
        "{label}: {:.0} events/s end to end, {server_rate:.0} server-only ({:.0} %)",
        pass.rate,
        ratio * 100.0
    );
    table.add_row([
        label.to_owned(),
        pass.events.to_string(),
        format!("{:.0}", pass.rate),
        format!("{server_rate:.0}"),
        format!("{:.0} %", ratio * 100.0),
        format!("{:.2} µs", pass.cpu_us_per_event),
        format!("{:.2} µs", pass.server_cpu_us_per_event),
        format!("{:.0} MiB", pass.peak_rss_mib),
    ]);
    serde_json::json!({
        "input": label,
        "events": pass.events,
        "events_per_s": pass.rate.round(),
        "server_only_events_per_s": server_rate.round(),
        "ratio": ratio,
        "client_cpu_us_per_event": pass.cpu_us_per_event,
        "client_peak_rss_mib": pass.peak_rss_mib,
        "server_cpu_us_per_event": pass.server_cpu_us_per_event,
    })
}

/// Runs the file scenario on `lines` lines of each format, and on the
/// ingest scenarios' own `scenario_events` synthetic events written as JSON
/// Lines (the events of the run's "Append, batches of 1,000, 4 feeds"); prints
/// a table and returns the figures. `append_scenario`: that scenario's figure
/// in this run, printed beside (0: not run).
pub(crate) async fn files(
    lines: usize,
    scenario_events: usize,
    append_scenario: f64,
) -> Result<serde_json::Value, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "caravan ingest of a file",
        "events",
        "events/s",
        "server-only Append, same events",
        "ratio",
        "client CPU per event",
        "server CPU per event",
        "client peak RSS",
    ]);
    let mut figures = Vec::new();
    for (format, name) in [("jsonl", "JSON Lines"), ("comtrade", "Comtrade CSV")] {
        let (plain, gz) = generate(dir.path(), lines, format)?;
        let path = plain.to_string_lossy().into_owned();
        let events =
            tokio::task::spawn_blocking(move || super::client::ingest::read_events(&path, "cli"))
                .await??;
        let server_rate = server_only(&events).await?;
        drop(events);
        for (file, label) in [(&plain, name.to_owned()), (&gz, format!("{name}, gzip"))] {
            let pass = file_pass(file).await?;
            figures.push(row(&mut table, &label, &pass, server_rate));
        }
    }
    // The Append scenario's own events, from a file.
    let events = super::bench::synthetic_events("bench", scenario_events, 7);
    let path = dir.path().join("scenario.jsonl");
    let mut text = String::new();
    for e in &events {
        text.push_str(&serde_json::to_string(e)?);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    let server_rate = server_only(&events).await?;
    drop(events);
    let pass = file_pass(&path).await?;
    let label = "the Append scenario's events, JSON Lines";
    figures.push(row(&mut table, label, &pass, server_rate));
    println!("{table}");
    if append_scenario > 0.0 {
        println!(
            "the same run's Append scenario (batches of 1,000, 4 feeds, its {scenario_events} synthetic \
             events on a fresh store): {append_scenario:.0} events/s; the last row's file of the same \
             events: {:.0} % of it",
            100.0 * pass.rate / append_scenario
        );
    }
    Ok(serde_json::json!(figures))
}

//! The figures of a benchmark: one record per run, written as JSON and a
//! markdown table, and drawn as PNG plots (throughput over time, latency
//! distribution) with plotters.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::Error;
use crate::apiserver::Counts;
use crate::process::Usage;

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `limit`, `limit-unwatched`, `limit-same-writes`, `operator`,
    /// `paced` or `latency`.
    pub kind: String,
    /// `smtp`, `api` or `resend`; `none` for a limit run (a
    /// `limit-same-writes` run names the transport whose writes it makes).
    pub transport: String,
    /// Messages.
    pub n: usize,
    /// Creates in flight at once (0 for a paced run).
    pub concurrency: usize,
    /// Wall-clock seconds from the first create until the last Sent.
    pub seconds: f64,
    /// Messages per second.
    pub per_second: f64,
    /// Create->Sent latency percentiles, milliseconds (operator runs).
    pub latency_ms: Option<Percentiles>,
    /// What the controller used (operator runs).
    pub controller: Option<Usage>,
    /// CPU seconds each part of the environment (etcd, kube-apiserver,
    /// mailpit) and the controller used during the run: where the time went.
    pub cpu_seconds: std::collections::BTreeMap<String, f64>,
    /// apiserver requests per message on emailmessages, by verb.
    pub requests_per_message: Counts,
    /// Of those, writes to emailmessages (create, update, patch, delete).
    pub writes_per_message: f64,
    /// Event writes per message (the controller records one per outcome).
    pub event_writes_per_message: f64,
    /// Writes to the ledger's EmailLedger pages per message (coalesced).
    pub ledger_writes_per_message: f64,
    /// Writes to the claim journal (EmailJournal) per message (group
    /// commits of the claims).
    pub journal_writes_per_message: f64,
    /// Messages seen Sent in each second of the run.
    pub sent_per_second: Vec<u32>,
    /// Create->claim and claim->Sent percentiles, milliseconds (operator
    /// runs): where a message waited.
    pub stages_ms: Option<Stages>,
    /// The mean JSON size of a message object when Sent, bytes (what each
    /// write and each watch event carries; 0 when not watched).
    pub object_bytes: f64,
    /// Every create->Sent latency, seconds, sorted (for the plot).
    #[serde(skip)]
    pub latencies: Vec<f64>,
    /// The statuses the controller wrote (operator runs), for the limit
    /// run that makes the same writes.
    #[serde(skip)]
    pub written: Option<crate::load::Written>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Where messages spent their time, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stages {
    /// From the create to the claim (Sending) the watch showed.
    pub waiting: Percentiles,
    /// From the claim to Sent: the send and the outcome's write.
    pub sending: Percentiles,
}

/// The stages of sorted create->claim and claim->Sent `seconds`.
pub fn stages((waiting, sending): (Vec<f64>, Vec<f64>)) -> Option<Stages> {
    Some(Stages {
        waiting: percentiles(&waiting)?,
        sending: percentiles(&sending)?,
    })
}

/// Percentiles of sorted `seconds`.
pub fn percentiles(seconds: &[f64]) -> Option<Percentiles> {
    let at = |q: f64| {
        let i = ((seconds.len() as f64 * q).ceil() as usize).clamp(1, seconds.len()) - 1;
        seconds[i] * 1000.0
    };
    (!seconds.is_empty()).then(|| Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    })
}

/// Counts of `times` (seconds from the start) per whole second.
pub fn per_second(times: impl Iterator<Item = f64>) -> Vec<u32> {
    let mut buckets: Vec<u32> = Vec::new();
    for t in times {
        let i = t.max(0.0) as usize;
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
    buckets
}

/// The kind of the limit run that makes exactly an operator run's writes.
pub const SAME_WRITES: &str = "limit-same-writes";

/// The markdown table of `runs`, with the operator/limit ratio per size.
pub fn markdown(runs: &[Run]) -> String {
    let mut out = String::from(
        "| run | transport | N | msg/s | vs limit | vs unwatched limit | vs same-writes limit | p50 ms | p95 ms | p99 ms | message writes/msg | event writes/msg | ledger writes/msg | journal writes/msg | requests/msg | CPU s | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let ratio_to = |kind: &str| {
            let limit = runs
                .iter()
                .find(|r| {
                    r.kind == kind
                        && r.n == run.n
                        && (kind != SAME_WRITES || r.transport == run.transport)
                })
                .map(|r| r.per_second);
            let compared =
                run.kind == "operator" || run.kind.starts_with(crate::status_variants::KIND);
            match limit {
                Some(limit) if compared && limit > 0.0 => {
                    format!("{:.2}", run.per_second / limit)
                }
                _ => "-".into(),
            }
        };
        let (ratio, bare) = (ratio_to("limit"), ratio_to("limit-unwatched"));
        let same = ratio_to(SAME_WRITES);
        let (p50, p95, p99) = run
            .latency_ms
            .map_or(("-".into(), "-".into(), "-".into()), |p| {
                (
                    format!("{:.0}", p.p50),
                    format!("{:.0}", p.p95),
                    format!("{:.0}", p.p99),
                )
            });
        let requests = run
            .requests_per_message
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (cpu, rss) = run.controller.map_or(("-".into(), "-".into()), |u| {
            (
                format!("{:.1}", u.cpu_seconds),
                format!("{:.1}", u.peak_rss_mib),
            )
        });
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {ratio} | {bare} | {same} | {p50} | {p95} | {p99} | {:.2} | {:.2} | {:.3} | {:.3} | {requests} | {cpu} | {rss} |\n",
            run.kind,
            run.transport,
            run.n,
            run.per_second,
            run.writes_per_message,
            run.event_writes_per_message,
            run.ledger_writes_per_message,
            run.journal_writes_per_message
        ));
    }
    out.push_str(&stage_table(runs));
    out.push_str(&cpu_table(runs));
    out
}

/// Where messages waited in each controller run: create->claim and
/// claim->Sent percentiles.
fn stage_table(runs: &[Run]) -> String {
    let mut out = String::from(
        "\nWhere a message spent its time (ms; create->claim: the watch, the work queue, a send slot and the claim's write, the claim seen as a Sending status or in the claim journal; claim->Sent: the send and the outcome's write), and the size of a Sent message object:\n\n| run | transport | N | create->claim p50 | p99 | claim->Sent p50 | p99 | object bytes |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut any = false;
    for run in runs {
        let cell = |p: Option<f64>| p.map_or("-".to_string(), |v| format!("{v:.0}"));
        let stages = run.stages_ms;
        if stages.is_none() && run.object_bytes == 0.0 {
            continue;
        }
        any = true;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            run.kind,
            run.transport,
            run.n,
            cell(stages.map(|s| s.waiting.p50)),
            cell(stages.map(|s| s.waiting.p99)),
            cell(stages.map(|s| s.sending.p50)),
            cell(stages.map(|s| s.sending.p99)),
            run.object_bytes
        ));
    }
    if any { out } else { String::new() }
}

/// Where the CPU went in each run: seconds per process, and their sum as a
/// share of the machine's cores over the run.
fn cpu_table(runs: &[Run]) -> String {
    let names: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.cpu_seconds.keys()).collect();
    if names.is_empty() {
        return String::new();
    }
    let cores = crate::cores::machine_cpus() as f64;
    let mut out = format!(
        "\nCPU seconds per process during each run ({cores} cores):\n\n| run | transport | N | {} | busy |\n|---|---|---|{}---|\n",
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(names.len())
    );
    for run in runs {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                run.cpu_seconds
                    .get(*n)
                    .map_or("-".into(), |s| format!("{s:.1}"))
            })
            .collect();
        let total: f64 = run.cpu_seconds.values().sum();
        let busy = total / (run.seconds * cores) * 100.0;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {busy:.0}% |\n",
            run.kind,
            run.transport,
            run.n,
            cells.join(" | ")
        ));
    }
    out
}

/// Writes `results.json`, `results.md` and the plots into `dir`.
pub fn write(dir: &Path, runs: &[Run]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Setup(format!("{}: {e}", dir.display())))?;
    let json = serde_json::to_string_pretty(runs).map_err(|e| Error::Setup(e.to_string()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| Error::Setup(format!("writing {name}: {e}")))
    };
    write("results.json", &json)?;
    write("results.md", &markdown(runs))?;
    match font() {
        Some(font) => {
            plotters::style::register_font("sans-serif", FontStyle::Normal, font)
                .map_err(|_| Error::Setup("the plot font could not be loaded".into()))?;
            throughput_plot(&dir.join("throughput.png"), runs)?;
            latency_plot(&dir.join("latency.png"), runs)?;
        }
        None => eprintln!("no DejaVu font found: plots skipped (install fonts-dejavu-core)"),
    }
    Ok(())
}

/// Writes `shape.json` and `shape.md` (the cluster-shape run) into `dir`.
pub fn write_shape(dir: &Path, run: &crate::cluster::ShapeRun) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(run).map_err(|e| Error::Setup(e.to_string()))?;
    std::fs::write(dir.join("shape.json"), json)
        .and_then(|()| std::fs::write(dir.join("shape.md"), crate::cluster::markdown(run)))
        .map_err(|e| Error::Setup(format!("writing the cluster-shape figures: {e}")))
}

/// Writes `cpus.json` into `dir`: which CPUs the control plane and the rest
/// ran on (written only when the run split them).
pub fn write_split(dir: &Path, split: &crate::cores::Split) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(split).map_err(|e| Error::Setup(e.to_string()))?;
    std::fs::write(dir.join("cpus.json"), json)
        .map_err(|e| Error::Setup(format!("writing cpus.json: {e}")))
}

/// Writes `unsubscribes.json` and `unsubscribes.md` into `dir`.
pub fn write_unsubscribes(
    dir: &Path,
    run: &crate::unsubscribes::UnsubscribeRun,
) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(run).map_err(|e| Error::Setup(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join("unsubscribes.json"), json))
        .and_then(|()| {
            std::fs::write(
                dir.join("unsubscribes.md"),
                crate::unsubscribes::markdown(run),
            )
        })
        .map_err(|e| Error::Setup(format!("writing the unsubscribe figures: {e}")))
}

/// Writes `history.json` and `history.md` (the history run) into `dir`.
pub fn write_history(dir: &Path, run: &crate::history::HistoryRun) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(run).map_err(|e| Error::Setup(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join("history.json"), json))
        .and_then(|()| std::fs::write(dir.join("history.md"), crate::history::markdown(run)))
        .map_err(|e| Error::Setup(format!("writing the history figures: {e}")))?;
    if font().is_some() {
        history_plot(&dir.join("history.png"), run)?;
    }
    Ok(())
}

/// Peak RSS at ready against the finished messages already there.
fn history_plot(path: &Path, run: &crate::history::HistoryRun) -> Result<(), Error> {
    let points: Vec<(f64, f64)> = run
        .starts
        .iter()
        .map(|s| (s.history as f64, s.peak_rss_mib))
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(10.0f64, f64::max) * 2.0;
    let y_max = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.5;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "controller peak RSS at ready, by finished messages in the cluster",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((100f64..x_max).log_scale(), 0f64..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("finished messages (log scale)")
        .y_desc("MiB")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
        .map_err(plot_error)?;
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

fn font() -> Option<&'static [u8]> {
    let bytes = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())?;
    Some(Box::leak(bytes.into_boxed_slice()))
}

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("drawing a plot: {e}"))
}

fn throughput_plot(path: &Path, runs: &[Run]) -> Result<(), Error> {
    let shown: Vec<&Run> = runs
        .iter()
        .filter(|r| !r.kind.starts_with("limit"))
        .collect();
    let x_max = shown
        .iter()
        .map(|r| r.sent_per_second.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = shown
        .iter()
        .flat_map(|r| r.sent_per_second.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("messages Sent per second", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..x_max, 0u32..(y_max + y_max / 10 + 1))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first create")
        .y_desc("Sent / s")
        .draw()
        .map_err(plot_error)?;
    for (i, run) in shown.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let label = format!("{} {} N={}", run.kind, run.transport, run.n);
        chart
            .draw_series(LineSeries::new(
                run.sent_per_second.iter().enumerate().map(|(x, y)| (x, *y)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

fn latency_plot(path: &Path, runs: &[Run]) -> Result<(), Error> {
    let shown: Vec<&Run> = runs.iter().filter(|r| !r.latencies.is_empty()).collect();
    let x_max = shown
        .iter()
        .filter_map(|r| r.latencies.last().copied())
        .fold(0.1f64, f64::max);
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "create -> Sent latency (cumulative share of messages)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max * 1.05, 0f64..1.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("share Sent")
        .draw()
        .map_err(plot_error)?;
    for (i, run) in shown.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let n = run.latencies.len() as f64;
        let label = format!("{} {} N={}", run.kind, run.transport, run.n);
        chart
            .draw_series(LineSeries::new(
                run.latencies
                    .iter()
                    .enumerate()
                    .map(|(j, s)| (*s, (j + 1) as f64 / n)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

/// Writes the bulk run's figures (bulk.json, bulk.md) to `dir`.
pub fn write_bulk(dir: &Path, runs: &[crate::bulk::BulkRun]) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(runs).map_err(|e| Error::Setup(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join("bulk.json"), json))
        .and_then(|()| std::fs::write(dir.join("bulk.md"), crate::bulk::markdown(runs)))
        .map_err(|e| Error::Setup(format!("writing the bulk figures: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let seconds: Vec<f64> = (1..=100).map(|i| i as f64 / 100.0).collect();
        let p = percentiles(&seconds).expect("some");
        assert_eq!((p.p50, p.p95, p.p99, p.max), (500.0, 950.0, 990.0, 1000.0));
        assert!(percentiles(&[]).is_none());
    }

    #[test]
    fn counts_per_second() {
        assert_eq!(per_second([0.1, 0.9, 2.5].into_iter()), vec![2, 0, 1]);
    }
}

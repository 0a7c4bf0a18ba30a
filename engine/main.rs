//! The `smoke` command line: parses arguments and calls into the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use smoke::console::Verbosity;
use smoke::events::Verdict;
use smoke::inventory::Inventory;
use smoke::project::Project;
use smoke::run::{self, RunRequest};
use smoke::runner::Cancel;
use smoke::scenario::plan::{self, PlanOptions, UpdateReferences};
use smoke::scenario::schema;
use smoke::scenario::source::SourceMap;
use smoke::secrets::SecretStore;

#[derive(Parser)]
#[command(name = "smoke", version, about = "Visual smoke tests of desktop apps and OS images over VNC")]
struct Cli {
    /// More output (-v: every check; -vv: debug logs).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only failures and the verdict.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario on a target.
    ///
    /// Exit codes: 0 passed, 1 a check or step failed, 2 invalid scenario or
    /// arguments, 3 infrastructure error, 130 interrupted.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Target OS from the inventory (default: the inventory's default).
        #[arg(long)]
        os: Option<String>,
        /// Set a variable: NAME=VALUE (VALUE is read as YAML: 3, true, [a, b]).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Where results go.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Inventory file (default: $SMOKE_INVENTORY, the project's inventory.yaml, or the built-in one).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Create reference images from this run: missing ones, or all.
        #[arg(long, value_enum)]
        update_references: Option<UpdateMode>,
    },
    /// Check scenario and routine files without running anything; lists every error.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        os: Option<String>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Print the expanded plan of valid scenarios.
        #[arg(long)]
        plan: bool,
    },
    /// List the targets of the inventory.
    Targets {
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of scenario or routine files (for editors).
    Schema {
        #[arg(value_enum, default_value = "scenario")]
        kind: SchemaKind,
    },
    /// Accept the actual images of a past run as reference images.
    ///
    /// Copies the image an ssim check compared (saved in the run's
    /// screenshots/) over its reference file and writes the sidecar naming
    /// the run.
    Approve {
        /// The run's results folder (e.g. results/latest).
        results: PathBuf,
        /// Only the image checks of this step.
        #[arg(long, conflicts_with_all = ["all", "failed"])]
        step: Option<usize>,
        /// Every image check of the run.
        #[arg(long, conflicts_with = "failed")]
        all: bool,
        /// Every image check that failed.
        #[arg(long)]
        failed: bool,
    },
    /// Needles: reference screenshots with areas to match.
    Needle {
        #[command(subcommand)]
        command: NeedleCommand,
    },
    /// Run one check on image files and print the score, place or text (to tune thresholds).
    ///
    /// Exit code 0 when the check passes (or no threshold is given), 1 when not.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum NeedleCommand {
    /// Convert openQA needles (NAME.json + NAME.png) into smoke needles.
    Import {
        /// openQA needle JSON files (the PNG beside each is copied).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the smoke needles go.
        #[arg(long, default_value = "needles")]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// SSIM of two PNGs (scikit-image's structural_similarity, Gaussian window).
    Ssim {
        a: PathBuf,
        b: PathBuf,
        /// Compare only x,y,w,h.
        #[arg(long, value_parser = parse_rect)]
        region: Option<smoke::geometry::Rect>,
        /// Ignore x,y,w,h (repeatable).
        #[arg(long, value_parser = parse_rect)]
        mask: Vec<smoke::geometry::Rect>,
        /// Compare each RGB channel; the score is the lowest.
        #[arg(long)]
        colour: bool,
        /// 7x7 box window instead of the Gaussian.
        #[arg(long = "box")]
        box_window: bool,
        #[arg(long)]
        threshold: Option<f64>,
        /// Write the SSIM heatmap PNG here.
        #[arg(long)]
        diff: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Find a needle (NAME.json with NAME.png, or a plain PNG) on a screenshot.
    Match {
        screen: PathBuf,
        needle: PathBuf,
        #[arg(long, value_parser = parse_rect)]
        region: Option<smoke::geometry::Rect>,
        /// ZNCC threshold for every match area.
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Read text with tesseract (or look for --find TEXT).
    Ocr {
        image: PathBuf,
        #[arg(long, value_parser = parse_rect)]
        region: Option<smoke::geometry::Rect>,
        /// Look for this text (raw, upscaled, inverted, binarized passes).
        #[arg(long)]
        find: Option<String>,
        /// Edits the reading may differ by.
        #[arg(long, default_value_t = 0)]
        max_distance: u32,
        #[arg(long)]
        case_sensitive: bool,
        #[arg(long)]
        json: bool,
    },
}

fn parse_rect(s: &str) -> Result<smoke::geometry::Rect, String> {
    smoke::vision::verbs::parse_rect(s)
}

#[derive(Clone, Copy, ValueEnum)]
enum UpdateMode {
    Missing,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Scenario,
    Routine,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) | (_, 1) => "warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMOKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, 0) => Verbosity::Normal,
        _ => Verbosity::Verbose,
    };
    match dispatch(cli.command, verbosity) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("smoke: error: {e:#}");
            ExitCode::from(Verdict::Error.exit_code() as u8)
        }
    }
}

fn dispatch(command: Command, verbosity: Verbosity) -> anyhow::Result<u8> {
    match command {
        Command::Run { scenario, os, vars, results, inventory, update_references } => {
            let update = match update_references {
                None => UpdateReferences::None,
                Some(UpdateMode::Missing) => UpdateReferences::Missing,
                Some(UpdateMode::All) => UpdateReferences::All,
            };
            let req = RunRequest {
                scenario,
                os,
                vars,
                inventory,
                results_root: results,
                update_references: update,
                verbosity,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let report = rt.block_on(async {
                let (tx, rx) = watch::channel(Cancel::Run);
                tokio::spawn(watch_signals(tx));
                run::run(req, rx).await
            });
            if let Some(m) = report.message {
                eprintln!("{m}");
            }
            if let Some(r) = report.results {
                eprintln!("results: {}", smoke::project::display_path(&r));
            }
            Ok(report.verdict.exit_code() as u8)
        }
        Command::Validate { files, os, vars, inventory, plan } => {
            validate(&files, os.as_deref(), &vars, inventory.as_deref(), plan)
        }
        Command::Targets { inventory, json } => targets(inventory.as_deref(), json),
        Command::Schema { kind } => {
            let s = match kind {
                SchemaKind::Scenario => schema::scenario(),
                SchemaKind::Routine => schema::routine(),
            };
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(0)
        }
        Command::Approve { results, step, all, failed } => approve(&results, step, all, failed),
        Command::Needle { command: NeedleCommand::Import { files, to } } => needle_import(&files, &to),
        Command::Image { command } => image(command),
    }
}

fn approve(results: &Path, step: Option<usize>, all: bool, failed: bool) -> anyhow::Result<u8> {
    use smoke::references::Selection;
    let selection = match (step, all, failed) {
        (Some(n), _, _) => Selection::Step(n),
        (None, true, _) => Selection::All,
        (None, false, true) => Selection::Failed,
        (None, false, false) => {
            eprintln!("smoke approve: say which images: --step N, --failed or --all");
            return Ok(Verdict::Invalid.exit_code() as u8);
        }
    };
    let approved = smoke::references::approve(results, selection)?;
    for a in &approved {
        let what = if a.changed { "approved" } else { "unchanged" };
        println!("{what}: step {} {} -> {}", a.step, a.check, smoke::project::display_path(&a.reference));
    }
    Ok(0)
}

fn needle_import(files: &[PathBuf], to: &Path) -> anyhow::Result<u8> {
    let mut failed = 0;
    for f in files {
        match smoke::vision::needle::import_openqa_file(f, to) {
            Ok((out, notes)) => {
                println!("imported: {} -> {}", f.display(), smoke::project::display_path(&out));
                for n in notes {
                    eprintln!("note: {}: {n}", f.display());
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("smoke: error: {e}");
            }
        }
    }
    Ok(if failed > 0 { Verdict::Invalid.exit_code() as u8 } else { 0 })
}

fn image(command: ImageCommand) -> anyhow::Result<u8> {
    use smoke::vision::verbs;
    let (report, json) = match command {
        ImageCommand::Ssim { a, b, region, mask, colour, box_window, threshold, diff, json } => {
            let args = verbs::SsimArgs { region, mask, colour, box_window, threshold, diff };
            (verbs::ssim(&a, &b, &args), json)
        }
        ImageCommand::Match { screen, needle, region, threshold, json } => {
            (verbs::find(&screen, &needle, region, threshold), json)
        }
        ImageCommand::Ocr { image, region, find, max_distance, case_sensitive, json } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            (rt.block_on(verbs::ocr(&image, region, find.as_deref(), max_distance, case_sensitive)), json)
        }
    };
    match report {
        Ok(r) => {
            println!("{}", r.render(json));
            Ok(if r.passed { 0 } else { Verdict::Failed.exit_code() as u8 })
        }
        Err(e) => {
            eprintln!("smoke: error: {e}");
            Ok(Verdict::Invalid.exit_code() as u8)
        }
    }
}

/// First Ctrl-C (or SIGTERM): finish with cleanup. Second Ctrl-C: stop now.
async fn watch_signals(tx: watch::Sender<Cancel>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let got = async {
            match term.as_mut() {
                Some(t) => tokio::select! { _ = tokio::signal::ctrl_c() => (), _ = t.recv() => () },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        got.await;
        let next = if *tx.borrow() == Cancel::Run { Cancel::Soft } else { Cancel::Hard };
        if next == Cancel::Soft {
            eprintln!("\nsmoke: stopping: running cleanup, then tearing down (Ctrl-C again to stop now)");
        } else {
            eprintln!("\nsmoke: stopping now");
        }
        let _ = tx.send(next);
        if next == Cancel::Hard {
            return;
        }
    }
}

fn validate(
    files: &[PathBuf],
    os: Option<&str>,
    vars: &[String],
    inventory: Option<&Path>,
    show_plan: bool,
) -> anyhow::Result<u8> {
    let mut bad_files = 0;
    let mut errors = 0;
    for file in files {
        let is_routine = file.components().any(|c| c.as_os_str() == "routines");
        let result: Result<String, String> = if is_routine {
            let mut sources = SourceMap::new();
            let project = Project::of_file(file);
            match Inventory::locate(inventory, Some(&project.root), &mut sources) {
                Err(d) => {
                    errors += d.len();
                    Err(d.render(&sources))
                }
                Ok(inv) => match inv.target(os) {
                    Err(m) => {
                        errors += 1;
                        Err(m)
                    }
                    Ok(t) => {
                        let opts = PlanOptions {
                            target: run::target_info(t),
                            overrides: Vec::new(),
                            update_references: UpdateReferences::None,
                            secrets: SecretStore::new(t.secrets.clone()),
                        };
                        match plan::validate_routine(file, &opts, &mut sources) {
                            Ok(n) => Ok(format!("ok: {} (routine, {n} steps)", smoke::project::display_path(file))),
                            Err(d) => {
                                errors += d.len();
                                Err(d.render(&sources))
                            }
                        }
                    }
                },
            }
        } else {
            match run::prepare(file, os, vars, inventory, UpdateReferences::None) {
                Ok(p) => {
                    let mut s = format!(
                        "ok: {} ({} steps, {} cleanup, on {})",
                        smoke::project::display_path(file),
                        p.plan.steps.len(),
                        p.plan.cleanup.len(),
                        p.target.name
                    );
                    if show_plan {
                        s.push('\n');
                        s.push_str(&p.plan.describe());
                    }
                    Ok(s)
                }
                Err((d, sources)) => {
                    errors += d.len();
                    Err(d.sorted().render(&sources))
                }
            }
        };
        match result {
            Ok(s) => println!("{s}"),
            Err(s) => {
                bad_files += 1;
                eprintln!("{s}");
            }
        }
    }
    if bad_files > 0 {
        eprintln!("{errors} error{} in {bad_files} of {} file{}", plural(errors), files.len(), plural(files.len()));
        return Ok(Verdict::Invalid.exit_code() as u8);
    }
    Ok(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn targets(inventory: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    let mut sources = SourceMap::new();
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let project = Project::find_from(&cwd);
    let inv = match Inventory::locate(inventory, project.as_ref().map(|p| p.root.as_path()), &mut sources) {
        Ok(i) => i,
        Err(d) => {
            eprintln!("{}", d.render(&sources));
            return Ok(Verdict::Invalid.exit_code() as u8);
        }
    };
    if json {
        let rows: Vec<serde_json::Value> = inv
            .targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "backend": t.backend.name(), "family": t.family, "desktop": t.desktop,
                    "default": inv.default.as_deref() == Some(t.name.as_str()),
                    "capabilities": t.backend.capabilities(),
                    "vars": t.vars.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"inventory": inv.source, "targets": rows}))?);
        return Ok(0);
    }
    println!("inventory: {}", inv.source);
    println!("{:<16} {:<14} {:<8} {:<10} capabilities", "target", "backend", "family", "desktop");
    for t in &inv.targets {
        let name =
            if inv.default.as_deref() == Some(t.name.as_str()) { format!("{} *", t.name) } else { t.name.clone() };
        println!(
            "{:<16} {:<14} {:<8} {:<10} {}",
            name,
            t.backend.name(),
            t.family,
            t.desktop.as_deref().unwrap_or("-"),
            t.backend.capabilities().join(", ")
        );
    }
    println!("(* default)");
    Ok(0)
}

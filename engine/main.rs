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
    /// Check that a target is ready: SSH, VNC, desktop session, tools, free space, leftovers.
    ///
    /// Prints one row per check; exits 1 when a check fails, 2 for a bad inventory.
    Doctor {
        /// Target OS from the inventory (default: the inventory's default).
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// An app process that must not be running (repeatable).
        #[arg(long = "process", value_name = "NAME")]
        processes: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of scenario or routine files (for editors).
    Schema {
        #[arg(value_enum, default_value = "scenario")]
        kind: SchemaKind,
    },
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
        Command::Doctor { os, inventory, processes, json } => {
            doctor(os.as_deref(), inventory.as_deref(), processes, json)
        }
        Command::Schema { kind } => {
            let s = match kind {
                SchemaKind::Scenario => schema::scenario(),
                SchemaKind::Routine => schema::routine(),
            };
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(0)
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

fn doctor(os: Option<&str>, inventory: Option<&Path>, processes: Vec<String>, json: bool) -> anyhow::Result<u8> {
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
    let target = match inv.target(os) {
        Ok(t) => t.clone(),
        Err(m) => {
            eprintln!("smoke: {m}");
            return Ok(Verdict::Invalid.exit_code() as u8);
        }
    };
    let logs = tempfile::Builder::new().prefix("smoke-doctor-").tempdir().context("creating a log folder")?;
    let ctx = smoke::backend::StartContext {
        logs: logs.path().to_path_buf(),
        cwd: cwd.clone(),
        secrets: SecretStore::new(target.secrets.clone()),
    };
    let opts = smoke::doctor::DoctorOptions { processes, ..Default::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let rows = rt.block_on(smoke::doctor::check(&target, &ctx, &opts));
    let failed = rows.iter().any(|r| r.status == smoke::doctor::Status::Fail);
    let redactor = ctx.secrets.redactor();
    if json {
        let mut v = serde_json::json!({"target": target.name, "inventory": inv.source, "ok": !failed, "checks": rows});
        redactor.redact_json(&mut v);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "doctor: target {} ({}, {}{}) from {}",
            target.name,
            target.backend.name(),
            target.family,
            target.desktop.as_deref().map(|d| format!(", {d}")).unwrap_or_default(),
            inv.source
        );
        for r in &rows {
            println!("{:<16} {:<5} {}", r.check, r.status.word(), redactor.redact(&r.detail));
        }
        println!("{}", if failed { "not ready: fix the FAIL rows" } else { "ready" });
    }
    Ok(if failed { 1 } else { 0 })
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
                    "capabilities": t.capabilities(),
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
            t.capabilities().join(", ")
        );
    }
    println!("(* default)");
    Ok(0)
}

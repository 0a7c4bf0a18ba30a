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
    /// arguments, 3 infrastructure error, 4 the VLM model is missing, 10 a boot
    /// failed (BOOT-FAILED), 11 a boot stalled (STALLED), 12 a boot ran out of
    /// time (TIMEOUT), 130 interrupted.
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
        /// After the first failed step keep the target up, print how to look at
        /// it, and wait: Enter runs cleanup, `a` Enter aborts.
        #[arg(long)]
        pause_on_failure: bool,
        /// POST a JSON notification here when the scenario is now a new or
        /// persistent failure (see `smoke history`).
        #[arg(long, env = "SMOKE_NOTIFY_URL", hide_env_values = true)]
        notify: Option<String>,
        /// Ask the vision-language model every question (no cached verdicts are read or stored).
        #[arg(long)]
        no_cache: bool,
        /// Start at main step N; the steps before it are skipped (see `smoke validate --plan`).
        #[arg(long, value_name = "N", conflicts_with = "from_checkpoint")]
        from_step: Option<usize>,
        /// VM targets: roll back to the snapshot of `checkpoint: NAME` an earlier
        /// run kept (keep_checkpoints) and start after that step.
        #[arg(long, value_name = "NAME")]
        from_checkpoint: Option<String>,
        /// VM targets: leave checkpoint snapshots on the VM after the run.
        #[arg(long)]
        keep_checkpoints: bool,
        /// VM targets: how long to wait for a VM (or GPU) another run holds.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        lock_timeout: Option<std::time::Duration>,
    },
    /// Prepare a target and open a shell in it (the local desktop's DISPLAY and
    /// HOME); the target is torn down when the shell exits.
    Shell {
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        inventory: Option<PathBuf>,
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
    /// Run every selected scenario on every selected target, in parallel.
    ///
    /// Exit code: 130 if interrupted, else 3 if any run had an infrastructure
    /// error (or timed out), else 1 if any failed, else 2 if any was invalid.
    Matrix {
        /// Scenario files or folders (default: the project's scenarios/).
        scenarios: Vec<PathBuf>,
        /// Only these targets (repeatable).
        #[arg(long)]
        os: Vec<String>,
        /// Only targets of this OS family (repeatable).
        #[arg(long)]
        family: Vec<String>,
        /// Only scenarios with this tag (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Runs at the same time.
        #[arg(long, short = 'j', default_value_t = 2)]
        jobs: usize,
        /// Time limit per run (then its cleanup runs and it counts as an error).
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[arg(long, default_value = "results")]
        results: PathBuf,
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Print the matrix as CI configuration instead of running it.
        #[arg(long, value_enum)]
        emit: Option<EmitKind>,
        /// POST a JSON notification here when any cell is now a new or
        /// persistent failure (see `smoke history`).
        #[arg(long, env = "SMOKE_NOTIFY_URL", hide_env_values = true)]
        notify: Option<String>,
        /// Ask the vision-language model every question (no cached verdicts are read or stored).
        #[arg(long)]
        no_cache: bool,
    },
    /// Write the HTML report of a run or matrix folder; `merge` combines runs made elsewhere.
    Report {
        #[command(subcommand)]
        action: Option<ReportAction>,
        /// A run folder (with events.jsonl) or a matrix folder (with matrix.json).
        folder: Option<PathBuf>,
    },
    /// Classify each (scenario, OS) from the history: passing, new failure,
    /// persistent failure, flaky, recovering; with --drift, check scores over time.
    History {
        #[arg(long, default_value = "results")]
        results: PathBuf,
        #[arg(long)]
        drift: bool,
        #[arg(long)]
        json: bool,
    },
    /// Ask the model again about the images a past run showed it (to tune a
    /// question or try another model offline).
    Replay {
        /// The run folder (with events.jsonl).
        run: PathBuf,
        /// The step whose questions to ask again.
        #[arg(long)]
        step: usize,
        /// Ask this instead of the recorded question.
        #[arg(long)]
        question: Option<String>,
        /// Ask this model instead of the inventory's.
        #[arg(long)]
        model: Option<String>,
        /// Ask the model even when the cache knows the answer.
        #[arg(long)]
        no_cache: bool,
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Manage the VLM verdict cache (the inventory's `vlm.cache`, or
    /// $XDG_CACHE_HOME/smoke/vlm-cache.jsonl).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        #[arg(long, global = true)]
        inventory: Option<PathBuf>,
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
    /// One VNC action from the command line: capture, key, type, click, move.
    ///
    /// ADDRESS is HOST:PORT, HOST:DISPLAY (port 5900+DISPLAY), [V6]:PORT or
    /// unix:PATH. The password comes from $SMOKE_VNC_PASSWORD, --password-env
    /// or --password-file, never from the command line. Exit codes: 0 done,
    /// 1 typed text never showed (--confirm), 2 bad arguments, 3 connection
    /// or server error.
    /// Show the machine locks (VMs, GPUs) and who holds them; `--hold KEY`
    /// takes a VM's lock and keeps it until Ctrl-C (keeps runs off a VM under
    /// maintenance). Exit codes: 0 done, 3 the lock stayed busy or the lock
    /// directory is unusable.
    Locks {
        /// Lock directory (default: $SMOKE_LOCK_DIR, else $XDG_RUNTIME_DIR/smoke/locks, else /tmp/smoke-locks-$UID).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Take the lock on this VM key (as `smoke targets` shows it, e.g. qemu:/images/a.qcow2) and hold it.
        #[arg(long, value_name = "KEY")]
        hold: Option<String>,
        /// With --hold: how long to wait while another process holds it.
        #[arg(long, value_parser = parse_duration, default_value = "30m")]
        timeout: std::time::Duration,
        /// With --hold: what the holder is doing (shown to whoever waits).
        #[arg(long, default_value = "smoke locks --hold")]
        purpose: String,
        #[arg(long)]
        json: bool,
    },
    Vnc {
        #[command(flatten)]
        conn: VncConnArgs,
        #[command(subcommand)]
        verb: VncVerb,
    },
    /// Run one check on image files and print the score, place or text (to tune thresholds).
    ///
    /// Exit code 0 when the check passes (or no threshold is given), 1 when not.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(clap::Args)]
struct VncConnArgs {
    /// Connect to this Unix socket; it takes the place of ADDRESS (same as unix:PATH).
    #[arg(long, global = true, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Read the password from this environment variable.
    #[arg(long, global = true, value_name = "VAR")]
    password_env: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The server's keyboard layout (for scancodes): us, de.
    #[arg(long, global = true, default_value = "us")]
    layout: String,
    /// Encodings in order, comma-separated (zrle, copyrect, raw, desktopsize, qemu-key, qemu-pointer).
    #[arg(long, global = true, value_delimiter = ',')]
    encodings: Vec<String>,
    /// Limit for connecting and for the first frame.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// Trust this CA (PEM) for the server's certificate (VeNCrypt X509, tls://, wss://).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 fingerprint (AB:CD:... or hex).
    #[arg(long, global = true, value_name = "SHA256")]
    fingerprint: Option<String>,
    /// Check the certificate against this name instead of the host connected to.
    #[arg(long, global = true, value_name = "NAME")]
    server_name: Option<String>,
    /// Username for VeNCrypt Plain (the password comes from --password-env/--password-file).
    #[arg(long, global = true, value_name = "NAME")]
    username: Option<String>,
}

#[derive(Subcommand)]
enum VncVerb {
    /// Save the screen as a PNG.
    Capture { address: String, out: PathBuf },
    /// Press key combos (ctrl+alt+t, enter, F5 ...), one after another.
    Key {
        address: String,
        #[arg(required = true)]
        combos: Vec<String>,
        /// Hold each combo down this long.
        #[arg(long, value_parser = parse_duration)]
        hold: Option<std::time::Duration>,
    },
    /// Type TEXT (a newline in it presses Enter).
    Type {
        address: String,
        text: String,
        /// Between characters.
        #[arg(long, default_value = "30ms", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// After each chunk of 8 characters wait up to this long for the screen to change; exit 1 if it does not.
        #[arg(long, value_parser = parse_duration, value_name = "WAIT")]
        confirm: Option<std::time::Duration>,
    },
    /// Click at X Y.
    Click {
        address: String,
        x: u32,
        y: u32,
        #[arg(long, default_value = "left")]
        button: String,
        #[arg(long)]
        double: bool,
    },
    /// Move the pointer to X Y.
    Move {
        address: String,
        x: u32,
        y: u32,
        /// Travel along a path (linear, bezier) taking --duration.
        #[arg(long, default_value = "linear")]
        path: String,
        #[arg(long, default_value = "0ms", value_parser = parse_duration)]
        duration: std::time::Duration,
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

#[derive(Subcommand)]
enum ReportAction {
    /// Combine run folders (e.g. CI job artifacts) into one matrix folder.
    Merge {
        /// Folders to search for runs.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Entries, size, models, oldest and newest.
    Stats,
    /// Remove every entry.
    Clear,
    /// Remove entries older than a duration (e.g. 30d, 12h).
    Prune {
        #[arg(long, value_parser = parse_age)]
        older_than: std::time::Duration,
    },
}

/// `30d`, `12h`, `90m`, or a number of seconds.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix('d').and_then(|d| d.trim().parse::<u64>().ok()) {
        Some(days) => Ok(std::time::Duration::from_secs(days * 86_400)),
        None => smoke::scenario::decode::parse_duration(s),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitKind {
    Github,
    Gitlab,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    smoke::scenario::decode::parse_duration(s)
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
    let cli = Cli::parse_from(unix_option_as_address(std::env::args_os().collect()));
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
        Command::Run {
            scenario,
            os,
            vars,
            results,
            inventory,
            update_references,
            pause_on_failure,
            notify,
            no_cache,
            from_step,
            from_checkpoint,
            keep_checkpoints,
            lock_timeout,
        } => {
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
                no_cache,
                verbosity,
                history_root: None,
                pause_on_failure,
                start_at: match (from_step, from_checkpoint) {
                    (Some(n), _) => smoke::runner::vm::StartAt::Step(n),
                    (None, Some(c)) => smoke::runner::vm::StartAt::Checkpoint(c),
                    (None, None) => smoke::runner::vm::StartAt::Beginning,
                },
                keep_checkpoints,
                lock_timeout,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let history_root = req.results_root.clone();
            let report = rt.block_on(async {
                let (tx, rx) = watch::channel(Cancel::Run);
                tokio::spawn(watch_signals(tx));
                let report = run::run(req, rx).await;
                if let (Some(url), Some(dir)) = (&notify, &report.results)
                    && let Ok((records, _)) = smoke::events::read_jsonl(&dir.join("events.jsonl"))
                {
                    let s = smoke::results::summary::from_events(&records);
                    let verdict = format!("{:?}", s.verdict).to_lowercase();
                    let page = dir.join("report.html").display().to_string();
                    match smoke::notify::after_runs(url, &history_root, &[(s.scenario, s.os)], &verdict, &page).await {
                        Ok(n) if n > 0 => eprintln!("smoke: notified the webhook ({n} alert)"),
                        Ok(_) => {}
                        Err(e) => eprintln!("smoke: {e}"),
                    }
                }
                report
            });
            if let Some(m) = report.message {
                eprintln!("{m}");
            }
            if let Some(r) = report.results {
                eprintln!("results: {}", smoke::project::display_path(&r));
            }
            Ok(report.exit_code as u8)
        }
        Command::Validate { files, os, vars, inventory, plan } => {
            validate(&files, os.as_deref(), &vars, inventory.as_deref(), plan)
        }
        Command::Targets { inventory, json } => targets(inventory.as_deref(), json),
        Command::Matrix {
            scenarios,
            os,
            family,
            tag,
            jobs,
            timeout,
            vars,
            results,
            inventory,
            emit,
            notify,
            no_cache,
        } => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            let root = Project::find_from(&cwd).map(|p| p.root).unwrap_or(cwd);
            let inv = match smoke::matrix::inventory(inventory.as_deref(), &root) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(Verdict::Invalid.exit_code() as u8);
                }
            };
            let sel = smoke::matrix::Selection { scenarios, os, families: family, tags: tag };
            let cells = match smoke::matrix::select(&sel, &inv, &root) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("smoke: {e}");
                    return Ok(Verdict::Invalid.exit_code() as u8);
                }
            };
            match emit {
                Some(EmitKind::Github) => {
                    println!("{}", smoke::matrix::emit::github(&cells));
                    return Ok(0);
                }
                Some(EmitKind::Gitlab) => {
                    print!("{}", smoke::matrix::emit::gitlab(&cells));
                    return Ok(0);
                }
                None => {}
            }
            let opts = smoke::matrix::exec::MatrixOptions {
                jobs,
                timeout,
                grace: std::time::Duration::from_secs(60),
                results_root: results,
                inventory,
                vars,
                update_references: UpdateReferences::None,
                no_cache,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let history_root = opts.results_root.clone();
            let (dir, summary) = rt.block_on(async {
                let (tx, rx) = watch::channel(Cancel::Run);
                tokio::spawn(watch_signals(tx));
                let out = smoke::matrix::exec::run(cells, opts, rx).await;
                if let (Some(url), Ok((dir, summary))) = (&notify, &out) {
                    let ran: Vec<(String, String)> =
                        summary.runs.iter().map(|r| (r.scenario.clone(), r.os.clone())).collect();
                    let verdict = format!("{:?}", summary.verdict).to_lowercase();
                    let page = dir.join("matrix.html").display().to_string();
                    match smoke::notify::after_runs(url, &history_root, &ran, &verdict, &page).await {
                        Ok(n) if n > 0 => eprintln!("smoke: notified the webhook ({n} alerts)"),
                        Ok(_) => {}
                        Err(e) => eprintln!("smoke: {e}"),
                    }
                }
                out
            })?;
            print_matrix(&summary);
            eprintln!("results: {}", smoke::project::display_path(&dir.join("matrix.html")));
            Ok(summary.exit_code as u8)
        }
        Command::Report { action: Some(ReportAction::Merge { inputs, out }), .. } => {
            let summary = smoke::matrix::merge::merge(&inputs, &out)
                .with_context(|| format!("merging into {}", out.display()))?;
            print_matrix(&summary);
            eprintln!("results: {}", smoke::project::display_path(&out.join("matrix.html")));
            Ok(summary.exit_code as u8)
        }
        Command::Report { action: None, folder } => {
            let folder = folder.context("give a run or matrix folder: smoke report results/latest")?;
            if folder.join("matrix.json").is_file() {
                let text = std::fs::read_to_string(folder.join("matrix.json"))?;
                let summary: smoke::matrix::exec::MatrixSummary =
                    serde_json::from_str(&text).context("reading matrix.json")?;
                for r in summary.runs.iter().filter_map(|r| r.run.as_ref()) {
                    smoke::report::run::write(&folder.join(r))?;
                }
                let history_root = folder.parent().unwrap_or(&folder).to_path_buf();
                smoke::matrix::exec::write_outputs(&folder, &summary, &history_root)?;
                println!("{}", smoke::project::display_path(&folder.join("matrix.html")));
            } else {
                let out = smoke::report::run::write(&folder)?;
                println!("{}", smoke::project::display_path(&out));
            }
            Ok(0)
        }
        Command::History { results, drift, json } => history(&results, drift, json),
        Command::Cache { action, inventory } => cache(action, inventory.as_deref()),
        Command::Replay { run, step, question, model, no_cache, inventory } => {
            replay(&run, step, question, model, no_cache, inventory.as_deref())
        }
        Command::Shell { os, inventory } => shell(os.as_deref(), inventory.as_deref()),
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
        Command::Approve { results, step, all, failed } => approve(&results, step, all, failed),
        Command::Needle { command: NeedleCommand::Import { files, to } } => needle_import(&files, &to),
        Command::Image { command } => image(command),
        Command::Vnc { conn, verb } => Ok(vnc(conn, verb)),
        Command::Locks { dir, hold, timeout, purpose, json } => locks(dir, hold, timeout, purpose, json),
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

/// `smoke vnc VERB --unix PATH ...` is `smoke vnc VERB unix:PATH ...`: the
/// socket takes the place of the ADDRESS argument.
fn unix_option_as_address(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const VERBS: &[&str] = &["capture", "key", "type", "click", "move"];
    const WITH_VALUE: &[&str] = &[
        "--password-env",
        "--password-file",
        "--layout",
        "--encodings",
        "--timeout",
        "--unix",
        "--hold",
        "--interval",
        "--confirm",
        "--button",
        "--path",
        "--duration",
    ];
    let Some(vnc) = args.iter().position(|a| a == "vnc") else { return args };
    let mut unix = None;
    let mut verb = None;
    let mut i = vnc + 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().to_string();
        if a == "--" {
            break;
        }
        if a == "--unix" && i + 1 < args.len() {
            unix = Some(args[i + 1].clone());
            args.drain(i..i + 2);
            continue;
        }
        if let Some(path) = a.strip_prefix("--unix=") {
            unix = Some(path.into());
            args.remove(i);
            continue;
        }
        if WITH_VALUE.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if verb.is_none() && VERBS.contains(&a.as_str()) {
            verb = Some(i);
        }
        i += 1;
    }
    if let (Some(path), Some(v)) = (unix, verb) {
        let mut address = std::ffi::OsString::from("unix:");
        address.push(path);
        args.insert(v + 1, address);
    }
    args
}

fn vnc(args: VncConnArgs, verb: VncVerb) -> u8 {
    match vnc_verb(args, verb) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("smoke: error: {e}");
            e.exit_code()
        }
    }
}

fn vnc_verb(args: VncConnArgs, verb: VncVerb) -> Result<(), smoke::vnc_verbs::VerbError> {
    use smoke::input::{Button, Layout, pointer::PathKind};
    use smoke::vnc_verbs::{self as v, Connection, PasswordSource, VerbError};
    let usage = VerbError::Usage;
    if let Some(path) = &args.unix {
        return Err(usage(format!("--unix {} needs a verb (capture, key, type, click, move)", path.display())));
    }
    let layout = Layout::parse(&args.layout).ok_or_else(|| {
        usage(format!(
            "unknown keyboard layout '{}' (known: {})",
            args.layout,
            smoke::input::layout::LAYOUT_NAMES.join(", ")
        ))
    })?;
    let password = match (args.password_env, args.password_file) {
        (Some(_), Some(_)) => return Err(usage("give --password-env or --password-file, not both".into())),
        (Some(var), None) => PasswordSource::Env(var),
        (None, Some(file)) => PasswordSource::File(file),
        (None, None) => PasswordSource::Default,
    };
    let address = match &verb {
        VncVerb::Capture { address, .. }
        | VncVerb::Key { address, .. }
        | VncVerb::Type { address, .. }
        | VncVerb::Click { address, .. }
        | VncVerb::Move { address, .. } => address.clone(),
    };
    let tls = smoke::rfb::TlsSettings {
        ca_file: args.ca,
        fingerprint_sha256: args.fingerprint,
        server_name: args.server_name,
    };
    let conn = Connection {
        address,
        password,
        layout,
        encodings: args.encodings,
        timeout: args.timeout,
        username: args.username,
        tls,
    };
    // One connection, one thread: no multi-threaded runtime to start.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VerbError::Infra(format!("starting the async runtime: {e}")))?;
    rt.block_on(async {
        match verb {
            VncVerb::Capture { out, .. } => v::capture(&conn, &out).await.map(|_| ()),
            VncVerb::Key { combos, hold, .. } => v::key(&conn, &combos, hold).await,
            VncVerb::Type { text, interval, confirm, .. } => {
                v::type_text(&conn, &text, smoke::runner::screen::TypeOptions { interval, confirm }).await
            }
            VncVerb::Click { x, y, button, double, .. } => {
                let button = Button::parse(&button)
                    .ok_or_else(|| usage(format!("unknown button '{button}' (left, middle, right)")))?;
                v::click(&conn, smoke::geometry::Point::new(x, y), button, double).await
            }
            VncVerb::Move { x, y, path, duration, .. } => {
                let path =
                    PathKind::parse(&path).ok_or_else(|| usage(format!("unknown path '{path}' (linear, bezier)")))?;
                v::move_to(&conn, smoke::geometry::Point::new(x, y), path, duration).await
            }
        }
    })
}

/// First Ctrl-C (or SIGTERM): finish with cleanup. Second Ctrl-C: stop now.
/// `smoke locks`: list the lock directory, or hold one lock until Ctrl-C.
fn locks(
    dir: Option<PathBuf>,
    hold: Option<String>,
    timeout: std::time::Duration,
    purpose: String,
    json: bool,
) -> anyhow::Result<u8> {
    use smoke::vm::lock::{self, LockDir, LockKey, Purpose};
    let dir = dir.map(LockDir::new).unwrap_or_else(LockDir::from_env);
    let infra = Verdict::Error.exit_code() as u8;
    let Some(key) = hold else {
        let states = match dir.list() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("smoke: {e}");
                return Ok(infra);
            }
        };
        if json {
            let rows: Vec<serde_json::Value> = states
                .iter()
                .map(|s| serde_json::json!({"file": s.path.display().to_string(), "held": s.held, "holder": s.holder}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(0);
        }
        if states.is_empty() {
            println!("no locks in {}", dir.path.display());
        }
        for s in states {
            let line = match (&s.holder, s.held) {
                (Some(h), true) => format!("{}  held by {}", h.key, h.describe()),
                (None, true) => format!("{}  held (holder unknown)", s.path.display()),
                (Some(h), false) => {
                    format!("{}  free (stale record of pid {} that ended without releasing it)", h.key, h.pid)
                }
                (None, false) => format!("{}  free", s.path.display()),
            };
            println!("{line}");
        }
        return Ok(0);
    };
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let key = LockKey::vm(key);
        // registered before the lock is taken: a SIGTERM right after must still release it cleanly
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let guard = match lock::acquire(&dir, &key, &Purpose { what: purpose, run: None }, timeout).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("smoke: {e}");
                return Ok(infra);
            }
        };
        println!("{}; holding it (pid {}) until Ctrl-C", guard.note(), std::process::id());
        match term.as_mut() {
            Some(t) => tokio::select! { _ = tokio::signal::ctrl_c() => (), _ = t.recv() => () },
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        drop(guard);
        eprintln!("smoke: released {key}");
        Ok(0)
    })
}

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
                            vlm: inv.vlm.is_some(),
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

fn shell(os: Option<&str>, inventory: Option<&Path>) -> anyhow::Result<u8> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let root = Project::find_from(&cwd).map(|p| p.root).unwrap_or(cwd.clone());
    let mut sources = SourceMap::new();
    let inv = match Inventory::locate(inventory, Some(&root), &mut sources) {
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
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let logs = tempfile::tempdir().context("a folder for the target's logs")?;
        let ctx = smoke::backend::StartContext {
            logs: logs.path().to_path_buf(),
            cwd: root.clone(),
            secrets: SecretStore::new(target.secrets.clone()),
            lock: Some(smoke::vm::lock::LockSettings::new(smoke::vm::lock::Purpose {
                what: format!("smoke shell --os {}", target.name),
                run: None,
            })),
            vm_disk: Default::default(),
        };
        let mut machine = smoke::backend::Machine::start(&target, &ctx)
            .await
            .with_context(|| format!("preparing target '{}'", target.name))?;
        eprintln!("smoke: target '{}' is up:", target.name);
        for line in machine.access_info() {
            eprintln!("  {line}");
        }
        let ssh = target.ssh.clone();
        let status = match machine.commands() {
            Some(smoke::backend::commands::Commands::Local(c)) => {
                let (set, removed, dir) = c.environment();
                let shell = std::env::var("SHELL").unwrap_or_else(|_| "sh".into());
                eprintln!("smoke: opening {shell} in the target's environment; exit it to tear the target down");
                let mut cmd = std::process::Command::new(&shell);
                for k in removed {
                    cmd.env_remove(k);
                }
                cmd.envs(set.iter().map(|(k, v)| (k, v))).current_dir(dir);
                tokio::task::spawn_blocking(move || cmd.status()).await.ok().and_then(|r| r.ok())
            }
            Some(smoke::backend::commands::Commands::Ssh(_)) if ssh.is_some() => {
                let s = ssh.unwrap_or_else(|| unreachable!());
                let mut cmd = std::process::Command::new("ssh");
                cmd.args(["-p", &s.port.to_string(), "-o", "StrictHostKeyChecking=yes"]);
                if let Some(k) = &s.key {
                    cmd.arg("-i").arg(k);
                }
                for kh in &s.known_hosts {
                    cmd.arg("-o").arg(format!("UserKnownHostsFile={}", kh.display()));
                }
                cmd.arg(format!("{}@{}", s.user, s.host));
                eprintln!(
                    "smoke: opening an SSH shell on the target ({}@{}:{}); exit it to tear the target down",
                    s.user, s.host, s.port
                );
                tokio::task::spawn_blocking(move || cmd.status()).await.ok().and_then(|r| r.ok())
            }
            _ => {
                eprintln!("smoke: this target runs no commands; press Enter to tear it down");
                let _ = tokio::task::spawn_blocking(|| {
                    let mut l = String::new();
                    std::io::stdin().read_line(&mut l)
                })
                .await;
                None
            }
        };
        for note in machine.teardown().await {
            tracing::debug!("teardown: {note}");
        }
        anyhow::Ok(status.and_then(|s| s.code()).unwrap_or(0) as u8)
    })
}

fn replay(
    run: &Path,
    step: usize,
    question: Option<String>,
    model: Option<String>,
    no_cache: bool,
    inventory: Option<&Path>,
) -> anyhow::Result<u8> {
    let Some(inv) = project_inventory(inventory)? else { return Ok(Verdict::Invalid.exit_code() as u8) };
    let Some(mut cfg) = inv.vlm else {
        eprintln!("smoke: the inventory has no `vlm:` section to ask (see docs/VLM.md)");
        return Ok(Verdict::Invalid.exit_code() as u8);
    };
    let recorded = match smoke::vlm::replay::recorded(run, step) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smoke: {e}");
            return Ok(Verdict::Invalid.exit_code() as u8);
        }
    };
    if let Some(m) = model {
        cfg.judge.model = m.clone();
        if let Some(l) = cfg.locate.as_mut() {
            l.model = m;
        }
    }
    let secrets = smoke::secrets::SecretStore::default();
    let vlm = smoke::vlm::Vlm::new(cfg, &secrets, !no_cache).context("setting up the vision-language model")?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        for r in &recorded {
            let q = question.clone().unwrap_or_else(|| r.question.clone());
            println!("step {} {} ({}): {q}", r.step, r.purpose, smoke::project::display_path(&r.image_path));
            println!("  then  {}: {}", r.model, one_line_answer(&r.answer));
            let (answer, how) = if r.is_locate() {
                let (located, a) = vlm.locate(&q, &r.image).await?;
                let at = match located {
                    Ok(l) => format!(" -> ({}, {})", l.point.x, l.point.y),
                    Err(e) => format!(" -> {e}"),
                };
                (format!("{}{at}", one_line_answer(&a.answer)), (a.model, a.cached, a.latency_ms))
            } else {
                let a = vlm.judge(&q, &r.image, 0).await?;
                let v = a.verdict.map(|v| format!(" [{v:?}]").to_lowercase()).unwrap_or_default();
                (format!("{}{v}", one_line_answer(&a.answer)), (a.model, a.cached, a.latency_ms))
            };
            let when = if how.1 { "cache".to_string() } else { format!("{} ms", how.2) };
            println!("  now   {}: {answer} ({when})", how.0);
        }
        anyhow::Ok(())
    })?;
    let spent = vlm.spent();
    println!("{} call(s), {} from the cache", spent.calls, spent.cache_hits);
    Ok(0)
}

fn one_line_answer(a: &str) -> String {
    a.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// The inventory of the project around the current directory (or `inventory`);
/// None after printing its mistakes.
fn project_inventory(inventory: Option<&Path>) -> anyhow::Result<Option<Inventory>> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let root = Project::find_from(&cwd).map(|p| p.root).unwrap_or(cwd);
    let mut sources = SourceMap::new();
    match Inventory::locate(inventory, Some(&root), &mut sources) {
        Ok(inv) => Ok(Some(inv)),
        Err(d) => {
            eprintln!("{}", d.render(&sources));
            Ok(None)
        }
    }
}

fn cache(action: CacheAction, inventory: Option<&Path>) -> anyhow::Result<u8> {
    let Some(inv) = project_inventory(inventory)? else { return Ok(Verdict::Invalid.exit_code() as u8) };
    let configured = inv.vlm.and_then(|v| v.cache);
    let Some(path) = configured.or_else(smoke::vlm::config::default_cache) else {
        eprintln!("smoke: no cache file configured and no HOME to put one in");
        return Ok(Verdict::Invalid.exit_code() as u8);
    };
    match action {
        CacheAction::Stats => {
            let s = smoke::vlm::cache::stats(&path);
            println!("{}: {} entries, {} bytes", s.path, s.entries, s.bytes);
            for (m, n) in &s.models {
                println!("  {m}: {n}");
            }
            if let (Some(o), Some(n)) = (&s.oldest, &s.newest) {
                println!("  oldest {o}, newest {n}");
            }
        }
        CacheAction::Clear => println!("removed {} entries from {}", smoke::vlm::cache::clear(&path)?, path.display()),
        CacheAction::Prune { older_than } => {
            let cutoff = time::OffsetDateTime::now_utc() - older_than;
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            let cutoff = cutoff.format(&fmt).context("formatting the cutoff")?;
            println!("removed {} entries older than {cutoff}", smoke::vlm::cache::prune(&path, &cutoff)?);
        }
    }
    Ok(0)
}

fn print_matrix(s: &smoke::matrix::exec::MatrixSummary) {
    for r in &s.runs {
        let word = if r.timed_out { "timeout".to_string() } else { format!("{:?}", r.verdict).to_lowercase() };
        println!("{:<12} {:<28} {:<14} {:>7.1}s", word, r.scenario, r.os, r.duration_ms as f64 / 1000.0);
    }
    println!("{:?}: {} runs in {:.1}s", s.verdict, s.runs.len(), s.duration_ms as f64 / 1000.0);
}

fn history(root: &Path, drift: bool, json: bool) -> anyhow::Result<u8> {
    let entries = smoke::history::read(root);
    if entries.is_empty() {
        eprintln!("no history in {} yet (every run appends to history.jsonl there)", root.display());
        return Ok(0);
    }
    if drift {
        let d = smoke::history::drift(&entries);
        if json {
            println!("{}", serde_json::to_string_pretty(&d)?);
            return Ok(0);
        }
        println!(
            "{:<20} {:<12} {:>4} {:<32} {:>7} {:>7} {:>8}  scores (oldest first)",
            "scenario", "os", "step", "check", "min", "last", "change"
        );
        for x in d {
            let scores: Vec<String> = x.scores.iter().rev().take(10).rev().map(|s| format!("{:.4}", s.1)).collect();
            println!(
                "{:<20} {:<12} {:>4} {:<32} {:>7.4} {:>7.4} {:>+8.4}  {}",
                x.scenario,
                x.os,
                x.step,
                x.label,
                x.min(),
                x.scores.last().map(|s| s.1).unwrap_or(0.0),
                x.change(),
                scores.join(" ")
            );
        }
        return Ok(0);
    }
    let statuses = smoke::history::statuses(&entries);
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<12} {:<19} {:>5} {:>9} {:>7}  last run",
        "scenario", "os", "class", "runs", "pass rate", "streak"
    );
    for s in &statuses {
        println!(
            "{:<20} {:<12} {:<19} {:>5} {:>8.0}% {:>7}  {}",
            s.scenario,
            s.os,
            s.class.name(),
            s.runs,
            s.pass_rate * 100.0,
            s.streak,
            s.last_run
        );
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
        lock: Some(smoke::vm::lock::LockSettings::new(smoke::vm::lock::Purpose {
            what: format!("smoke doctor --os {}", target.name),
            run: None,
        })),
        vm_disk: Default::default(),
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

//! The typed model of scenario steps and checks, and its decoding from the
//! (rendered) positioned tree.
//!
//! A step is a map with exactly one action key (`type: "hello"`) plus common
//! modifiers (`label`, `timeout`, `retries`) and optional expectations
//! (`verify`, `verify_not`) that must hold after the action. A step with only
//! `verify`/`verify_not` is a pure check. The key lists here are the single
//! source for the decoder's "did you mean" and for the JSON Schema.

use std::path::PathBuf;
use std::time::Duration;

use crate::geometry::{Point, Rect};
use crate::input::pointer::{PATH_KINDS, PathKind, SCROLL_DIRECTIONS, ScrollDirection};
use crate::input::{Button, KeyCombo};
use crate::scenario::decode::{self, MapReader};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::scenario::node::{Node, Value};
use crate::scenario::source::Span;

/// Action keys of a step, with a one-line description each.
pub const ACTIONS: &[(&str, &str)] = &[
    ("shell", "Run a shell command on the target; fails on an unexpected exit code."),
    ("launch", "Start an application and wait until its process runs and a screen condition holds."),
    (
        "key",
        "Press a key combo (ctrl+alt+t, shift+tab, F5, enter) or a list of them; `{combo, hold: 2s}` holds one down.",
    ),
    ("key_down", "Press key combos and keep them down until a key_up step (or the end of the run)."),
    ("key_up", "Release key combos a key_down step pressed."),
    (
        "type",
        "Type text, with Shift sent explicitly for upper case and symbols; `confirm: true` checks that each chunk showed on the screen.",
    ),
    ("click", "Click at a point, or on text found by OCR, or on an image found on screen."),
    ("move", "Move the mouse to a point, text or image; `path: bezier` and `duration` move like a hand."),
    ("drag", "Press a mouse button at `from`, move along a path to `to`, release."),
    ("scroll", "Turn the mouse wheel: `scroll: down`, or `{direction, count, at}`."),
    ("wait", "Pause for a fixed time (prefer wait_for)."),
    ("wait_for", "Poll a check until it holds or the timeout runs out."),
    (
        "wait_still",
        "Wait until the screen (or a region) has not changed for a while; blinking carets are masked. Alone or after an action.",
    ),
    (
        "wait_change",
        "After the step's action: wait until the screen (or a region) changed. Alone: since the step started.",
    ),
    ("verify", "A check (or list of checks) that must hold; polled until the timeout."),
    ("verify_not", "A check (or list of checks) that must NOT hold; polled until the timeout."),
    ("screenshot", "Save a screenshot (optionally of a region) into the results."),
    (
        "if_visible",
        "Ask the vision-language model a yes/no question; when yes, run the steps under `then` (a guard for dialogs that may or may not appear). Never fails the scenario.",
    ),
    ("routine", "Call a routine from routines/ with inputs given in `with`."),
    (
        "boot",
        "VM targets: follow the boot on the serial console until the login prompt or `marker` (BOOTED); a kernel panic, oops, emergency mode or missing root is BOOT-FAILED (exit 10), silence after the kernel started STALLED (11), the budget spent TIMEOUT (12).",
    ),
    ("expect", "VM targets: wait until the serial console prints text matching `serial: REGEX`."),
    ("send", "VM targets: type `serial: TEXT` into the serial console (escapes: \\n, \\r, \\t, \\e, \\xHH, \\\\)."),
    (
        "checkpoint",
        "VM targets: snapshot the VM under this name; with `rewind_on_failure` a later failed step rolls back here and goes on once.",
    ),
];

/// Keys every step may carry besides its action.
pub const MODIFIERS: &[(&str, &str)] = &[
    ("label", "A name for the step in events, reports and the GIF timeline."),
    ("timeout", "Budget for the step's polling (checks, launch wait); default from `defaults.timeout`."),
    ("retries", "How often to retry a failed step; a retry first re-checks the step's verify (never types twice)."),
    ("with", "Inputs of a routine call."),
    ("then", "The steps an `if_visible` guard runs when the model answers yes."),
    (
        "verify_input",
        "After `type`: ask the vision-language model whether the typed text landed in this field (e.g. \"the Username field\").",
    ),
    (
        "precheck_click",
        "With `click: {locate: ...}`: before clicking, ask the model about a crop around the point whether it is the described element.",
    ),
];

pub const SHELL_KEYS: &[&str] = &["command", "exit", "file", "save"];
pub const LAUNCH_KEYS: &[&str] = &["command", "process", "until", "wait", "file"];
pub const TYPE_KEYS: &[&str] = &["text", "interval", "confirm"];
pub const KEY_HOLD_KEYS: &[&str] = &["combo", "hold"];
pub const DRAG_KEYS: &[&str] = &["from", "to", "button", "path", "duration", "dwell"];
pub const SCROLL_KEYS: &[&str] = &["direction", "count", "at"];
pub const TARGET_KEYS: &[&str] = &[
    "x",
    "y",
    "at",
    "text",
    "regex",
    "case_sensitive",
    "max_distance",
    "image",
    "needle",
    "point",
    "threshold",
    "region",
    "offset",
    "button",
    "double",
    "locate",
    "path",
    "duration",
];
pub const SCREENSHOT_KEYS: &[&str] = &["name", "region"];
pub const BOOT_KEYS: &[&str] = &["marker", "login", "timeout", "stall", "failures"];
pub const SERIAL_EXPECT_KEYS: &[&str] = &["serial", "timeout"];
pub const SERIAL_SEND_KEYS: &[&str] = &["serial"];
/// Budget of a boot step without `timeout`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Serial silence after the kernel started that a boot step calls a stall by default.
pub const BOOT_STALL: Duration = Duration::from_secs(60);
/// Longest checkpoint name (the snapshot is `smoke-NAME`; Proxmox allows 40 characters).
pub const CHECKPOINT_NAME_MAX: usize = 32;
pub const CHECK_KINDS: &[(&str, &str)] = &[
    ("ocr", "Text read by OCR (tesseract): substring or regex, optionally in a region."),
    ("ssim", "Structural similarity of the screen (or a region) to a reference image."),
    ("needle", "A needle (PNG + JSON areas) found on screen: every match area, exclusions, OCR areas."),
    ("vlm", "A yes/no question a vision-language model answers about the screen (or a region); the last, cached tier."),
];
pub const VLM_KEYS: &[&str] = &["question", "region", "accept_any", "consistent", "decide_first"];
pub const IF_VISIBLE_KEYS: &[&str] = &["question", "region"];
pub const OCR_KEYS: &[&str] = &["text", "regex", "case_sensitive", "max_distance", "variants", "region"];
pub const SSIM_KEYS: &[&str] = &["reference", "region", "mask", "threshold", "window", "colour", "regions"];
pub const SSIM_REGION_KEYS: &[&str] = &["region", "threshold", "name"];
pub const NEEDLE_KEYS: &[&str] = &["name", "threshold", "region"];
pub const WAIT_STILL_KEYS: &[&str] = &["for", "region", "tolerance"];
pub const WAIT_CHANGE_KEYS: &[&str] = &["region", "min_pixels", "tolerance"];
/// OCR preprocessing variants a scenario may name.
pub const OCR_VARIANTS: &[&str] = &["raw", "upscaled", "inverted", "binarized"];

/// One step of a scenario or routine.
#[derive(Debug, Clone)]
pub struct Step {
    pub label: Option<String>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub action: Action,
    /// Checks that must hold after the action (for a pure check step: the check itself).
    pub expect: Vec<Expect>,
    /// After the action: wait until the screen changed (before `wait_still` and the checks).
    pub wait_change: Option<ChangeWait>,
    /// After the action: wait until the screen stopped changing (before the checks).
    pub wait_still: Option<StillWait>,
    pub span: Span,
}

/// `wait_still`: no change (outside blinking cells) for `quiet`.
#[derive(Debug, Clone, PartialEq)]
pub struct StillWait {
    pub quiet: Duration,
    pub region: Option<Rect>,
    /// Channel differences up to this count as no change.
    pub tolerance: u8,
}

/// `wait_change`: at least `min_pixels` pixels differ from the screen before the action.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeWait {
    pub region: Option<Rect>,
    pub min_pixels: u64,
    pub tolerance: u8,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    Shell(ShellAction),
    Launch(LaunchAction),
    Key(Vec<KeyCombo>),
    /// One combo held down for a while.
    KeyHold(KeyCombo, Duration),
    KeyDown(Vec<KeyCombo>),
    KeyUp(Vec<KeyCombo>),
    Type(TypeAction),
    Click(ClickAction),
    Move(Target),
    /// A move along a path taking `duration`.
    MoveAlong(Target, PathKind, Duration),
    Drag(DragAction),
    Scroll(ScrollAction),
    Wait(Duration),
    /// Ask the model; run the sub-steps when it says yes.
    IfVisible(IfVisible),
    /// Poll the step's expectations until they hold (a synchronisation point).
    WaitFor,
    /// Only the step's `wait_still` / `wait_change`.
    ScreenWait,
    /// Only the step's expectations.
    Verify,
    Screenshot(ScreenshotAction),
    /// Follow the boot on the serial console.
    Boot(BootAction),
    /// Wait for serial output matching a pattern.
    SerialExpect(SerialExpect),
    /// Type into the serial console.
    SerialSend(SerialSend),
    /// Snapshot the VM under a name.
    Checkpoint(String),
}

/// `boot:` — how a boot is judged.
#[derive(Debug, Clone)]
pub struct BootAction {
    /// The line that says the system is up; `None`: a getty login prompt.
    pub marker: Option<regex::Regex>,
    /// With a marker: a login prompt counts as booted too.
    pub login: bool,
    /// Overall budget (else the step's `timeout`, else [`BOOT_TIMEOUT`]).
    pub timeout: Option<Duration>,
    pub stall: Duration,
    /// More lines that mean the boot failed.
    pub failures: Vec<regex::Regex>,
}

/// `expect: {serial: REGEX, timeout}`.
#[derive(Debug, Clone)]
pub struct SerialExpect {
    pub pattern: regex::Regex,
    /// Else the step's `timeout`, else `defaults.timeout`.
    pub timeout: Option<Duration>,
}

/// `send: {serial: TEXT}` (escapes already decoded).
#[derive(Debug, Clone)]
pub struct SerialSend {
    pub text: String,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Shell(_) => "shell",
            Action::Launch(_) => "launch",
            Action::Key(_) | Action::KeyHold(..) => "key",
            Action::KeyDown(_) => "key_down",
            Action::KeyUp(_) => "key_up",
            Action::Type(_) => "type",
            Action::Click(_) => "click",
            Action::Move(_) | Action::MoveAlong(..) => "move",
            Action::Drag(_) => "drag",
            Action::Scroll(_) => "scroll",
            Action::Wait(_) => "wait",
            Action::IfVisible(_) => "if_visible",
            Action::WaitFor => "wait_for",
            Action::ScreenWait => "screen_wait",
            Action::Verify => "verify",
            Action::Screenshot(_) => "screenshot",
            Action::Boot(_) => "boot",
            Action::SerialExpect(_) => "expect",
            Action::SerialSend(_) => "send",
            Action::Checkpoint(_) => "checkpoint",
        }
    }

    /// The VM ability this action needs (`serial`, `snapshots`), if any.
    pub fn vm_capability(&self) -> Option<&'static str> {
        match self {
            Action::Boot(_) | Action::SerialExpect(_) | Action::SerialSend(_) => Some("serial"),
            Action::Checkpoint(_) => Some("snapshots"),
            _ => None,
        }
    }
}

/// `if_visible: QUESTION` + `then: [steps]`: a guard that never fails the scenario.
#[derive(Debug, Clone)]
pub struct IfVisible {
    pub question: String,
    /// Ask about this part of the screen only.
    pub region: Option<Rect>,
    pub then: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct ShellAction {
    pub command: String,
    /// Exit codes that count as success; empty means any.
    pub ok_exit: Vec<i32>,
    /// A file pattern resolved on the target to one file; `{file}` in the
    /// command becomes its (quoted) path.
    pub file: Option<String>,
    /// Save the command's stdout (capped) into the results under this name.
    pub save: Option<String>,
}

/// How to start a program.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandLine {
    /// A shell command line (`sh -c`).
    Shell(String),
    /// A program and its arguments, no shell.
    Argv(Vec<String>),
}

impl CommandLine {
    /// The program's base name: the process name to wait for by default.
    /// Windows paths (`C:\\App\\app.exe`) are split at `\\` too.
    pub fn program_name(&self) -> String {
        let first = match self {
            CommandLine::Shell(s) => s.split_whitespace().find(|w| !w.contains('=')).unwrap_or("").to_string(),
            CommandLine::Argv(a) => a.first().cloned().unwrap_or_default(),
        };
        if first.contains('\\') {
            return crate::guest::windows::basename(&first).to_string();
        }
        first.rsplit('/').next().unwrap_or("").to_string()
    }

    /// Does the command use the `{file}` placeholder?
    pub fn uses_file(&self) -> bool {
        match self {
            CommandLine::Shell(s) => crate::guest::uses_file(s),
            CommandLine::Argv(a) => a.iter().any(|x| crate::guest::uses_file(x)),
        }
    }

    /// The command with `{file}` replaced: quoted (with `quote`) in a shell
    /// line, verbatim in an argument list.
    pub fn with_file(&self, path: &str, quote: impl Fn(&str) -> String) -> CommandLine {
        match self {
            CommandLine::Shell(s) => CommandLine::Shell(crate::guest::substitute_file(s, &quote(path))),
            CommandLine::Argv(a) => {
                CommandLine::Argv(a.iter().map(|x| crate::guest::substitute_file(x, path)).collect())
            }
        }
    }

    pub fn display(&self) -> String {
        match self {
            CommandLine::Shell(s) => s.clone(),
            CommandLine::Argv(a) => {
                a.iter().map(|x| crate::scenario::template::shquote(x)).collect::<Vec<_>>().join(" ")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct LaunchAction {
    pub command: CommandLine,
    /// Process name to wait for (compared as the kernel does: first 15 bytes).
    pub process: String,
    /// Screen condition that must hold once the process runs; without it, the
    /// screen must have changed since the launch.
    pub until: Option<Expect>,
    /// Polling budget for process + screen condition.
    pub wait: Duration,
    /// A file pattern resolved on the target to one file; `{file}` in the
    /// command (and a defaulted process name) becomes its path.
    pub file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TypeAction {
    pub text: String,
    pub interval: Option<Duration>,
    /// Check after each chunk that the screen changed (default from
    /// `defaults.type_confirm`).
    pub confirm: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct DragAction {
    pub from: Target,
    pub to: Target,
    pub button: Button,
    pub path: PathKind,
    pub duration: Duration,
    pub dwell: Duration,
}

#[derive(Debug, Clone)]
pub struct ScrollAction {
    /// Where to scroll; where the pointer is when absent.
    pub at: Option<Target>,
    pub direction: ScrollDirection,
    pub count: u32,
}

#[derive(Debug, Clone)]
pub struct ClickAction {
    pub target: Target,
    pub button: Button,
    pub double: bool,
    /// `precheck_click: true` (locate targets): ask about a crop around the point first.
    pub precheck: bool,
}

/// Where on the screen a click or move goes.
#[derive(Debug, Clone)]
pub enum Target {
    At(Point),
    /// The box of text found by OCR (centre), plus an offset.
    Text {
        query: TextMatch,
        region: Option<Rect>,
        offset: (i32, i32),
    },
    /// The best match of a reference image (centre), plus an offset.
    Image {
        reference: Reference,
        region: Option<Rect>,
        threshold: f64,
        offset: (i32, i32),
    },
    /// A click point of a needle (displaced as the needle was found), plus an offset.
    Needle {
        needle: Reference,
        point: Option<String>,
        threshold: Option<f64>,
        region: Option<Rect>,
        offset: (i32, i32),
    },
    /// Where the vision-language model points for a description (grounding).
    Locate {
        description: String,
        region: Option<Rect>,
        offset: (i32, i32),
    },
}

#[derive(Debug, Clone)]
pub struct ScreenshotAction {
    pub name: String,
    pub region: Option<Rect>,
}

/// A check with its polarity: `verify` (must hold) or `verify_not` (must not).
#[derive(Debug, Clone)]
pub struct Expect {
    pub check: Check,
    pub negate: bool,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Check {
    Ocr(OcrCheck),
    Ssim(SsimCheck),
    Needle(NeedleCheck),
    Vlm(VlmCheck),
}

impl Check {
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Ocr(_) => "ocr",
            Check::Ssim(_) => "ssim",
            Check::Needle(_) => "needle",
            Check::Vlm(_) => "vlm",
        }
    }

    pub fn region(&self) -> Option<Rect> {
        match self {
            Check::Ocr(c) => c.region,
            Check::Ssim(c) => c.region,
            Check::Needle(c) => c.region,
            Check::Vlm(c) => c.region,
        }
    }

    /// A short human description ("ocr \"42\" in 10,10 200x40").
    pub fn describe(&self) -> String {
        let region = self.region().map(|r| format!(" in {r}")).unwrap_or_default();
        match self {
            Check::Ocr(c) => format!("ocr {}{region}", c.query),
            Check::Ssim(c) => format!(
                "ssim{} {} >= {}{region}",
                if c.colour { " (colour)" } else { "" },
                c.reference.name,
                c.threshold
            ),
            Check::Needle(c) => format!("needle {}{region}", c.needle.name),
            Check::Vlm(c) => format!("vlm \"{}\"{region}", c.question),
        }
    }
}

/// A yes/no question for the vision-language model.
#[derive(Debug, Clone)]
pub struct VlmCheck {
    pub question: String,
    /// Crop the screen to this region before asking.
    pub region: Option<Rect>,
    /// Pass on the first yes among the samples.
    pub accept_any: bool,
    /// Ask this many independent samples; the majority decides (1: one question).
    pub consistent: u32,
    /// Cheaper checks tried first: when one of them holds, the answer is yes
    /// without asking the model.
    pub decide_first: Vec<Expect>,
    /// The question to ask instead when `question` would carry a secret to
    /// the model (`verify_input` after typing a password).
    pub without_secrets: Option<String>,
}

/// Does this step ask the vision-language model anything?
pub fn uses_vlm(step: &Step) -> bool {
    let check = |e: &Expect| matches!(e.check, Check::Vlm(_));
    step.expect.iter().any(check)
        || match &step.action {
            Action::Launch(l) => l.until.as_ref().is_some_and(check),
            Action::Click(ClickAction { target: Target::Locate { .. }, .. })
            | Action::Move(Target::Locate { .. })
            | Action::MoveAlong(Target::Locate { .. }, ..)
            | Action::Scroll(ScrollAction { at: Some(Target::Locate { .. }), .. }) => true,
            Action::Drag(d) => [&d.from, &d.to].iter().any(|t| matches!(t, Target::Locate { .. })),
            Action::IfVisible(_) => true,
            _ => false,
        }
}

/// Text to find: a substring (whitespace-normalised) or a regular expression.
#[derive(Debug, Clone)]
pub enum TextMatch {
    Contains {
        text: String,
        case_sensitive: bool,
    },
    Regex(regex::Regex),
    /// A substring read with up to `max_distance` edits.
    Fuzzy {
        text: String,
        case_sensitive: bool,
        max_distance: u32,
    },
}

impl std::fmt::Display for TextMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextMatch::Contains { text, .. } => write!(f, "\"{text}\""),
            TextMatch::Regex(r) => write!(f, "/{}/", r.as_str()),
            TextMatch::Fuzzy { text, max_distance, .. } => write!(f, "\"{text}\" (~{max_distance})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OcrCheck {
    pub query: TextMatch,
    pub region: Option<Rect>,
    /// Preprocessing variants to try, in order (empty: all, the default order).
    pub variants: Vec<crate::vision::ocr::OcrVariant>,
}

/// A needle that must be on screen.
#[derive(Debug, Clone)]
pub struct NeedleCheck {
    pub needle: Reference,
    /// Overrides every match area's own threshold.
    pub threshold: Option<f64>,
    /// Search only here.
    pub region: Option<Rect>,
}

/// A part of an SSIM check's area with a threshold of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct SsimRegion {
    pub name: Option<String>,
    pub region: Rect,
    pub threshold: f64,
}

#[derive(Debug, Clone)]
pub struct SsimCheck {
    pub reference: Reference,
    pub region: Option<Rect>,
    pub mask: Vec<Rect>,
    pub threshold: f64,
    pub window: SsimWindowKind,
    /// Compare each RGB channel and take the lowest score (catches a change of hue
    /// that grayscale SSIM cannot see).
    pub colour: bool,
    /// Parts of the area (screen coordinates) with thresholds of their own.
    pub regions: Vec<SsimRegion>,
}

/// The SSIM window: Gaussian (sigma 1.5, as scikit-image) or a 7x7 box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SsimWindowKind {
    #[default]
    Gaussian,
    Box,
}

/// A reference image as written in the scenario; the plan resolves its path.
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    pub span: Span,
    /// Resolved file (set by the plan). May not exist yet when references are
    /// being created (`--update-references`).
    pub path: Option<PathBuf>,
}

/// Between typed characters when neither scenario nor target says: about 33
/// keys/s, what real systems accept (openQA types at 30 keys/s).
pub const TYPE_INTERVAL: Duration = Duration::from_millis(30);

/// Step defaults a scenario may set under `defaults:`.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub timeout: Duration,
    pub retries: u32,
    /// Between typed characters; `None`: the target's `type_interval`, else
    /// [`TYPE_INTERVAL`].
    pub type_interval: Option<Duration>,
    /// Confirm every `type` on the screen unless the step says otherwise;
    /// `None`: the target's `type_confirm`, else no.
    pub type_confirm: Option<bool>,
    pub click_settle: Duration,
    pub ssim_threshold: f64,
    pub image_threshold: f64,
    pub launch_wait: Duration,
}

pub const DEFAULTS_KEYS: &[&str] = &[
    "timeout",
    "retries",
    "type_interval",
    "type_confirm",
    "click_settle",
    "ssim_threshold",
    "image_threshold",
    "launch_wait",
];

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout: Duration::from_secs(10),
            retries: 0,
            type_interval: None,
            type_confirm: None,
            click_settle: Duration::from_millis(200),
            ssim_threshold: 0.98,
            image_threshold: 0.9,
            launch_wait: Duration::from_secs(30),
        }
    }
}

impl Defaults {
    pub fn decode(node: &Node, diags: &mut Diagnostics) -> Defaults {
        let mut d = Defaults::default();
        let Some(m) = MapReader::new(node, "defaults", DEFAULTS_KEYS, diags) else { return d };
        if let Some(v) = m.get("timeout").and_then(|n| decode::duration(n, "defaults.timeout", diags)) {
            d.timeout = v;
        }
        if let Some(v) = m.get("retries").and_then(|n| decode::integer(n, "defaults.retries", 0, 100, diags)) {
            d.retries = v as u32;
        }
        if let Some(v) = m.get("type_interval").and_then(|n| decode::duration(n, "defaults.type_interval", diags)) {
            d.type_interval = Some(v);
        }
        if let Some(v) = m.get("type_confirm").and_then(|n| decode::boolean(n, "defaults.type_confirm", diags)) {
            d.type_confirm = Some(v);
        }
        if let Some(v) = m.get("click_settle").and_then(|n| decode::duration(n, "defaults.click_settle", diags)) {
            d.click_settle = v;
        }
        if let Some(v) =
            m.get("ssim_threshold").and_then(|n| decode::number(n, "defaults.ssim_threshold", 0.0, 1.0, diags))
        {
            d.ssim_threshold = v;
        }
        if let Some(v) =
            m.get("image_threshold").and_then(|n| decode::number(n, "defaults.image_threshold", 0.0, 1.0, diags))
        {
            d.image_threshold = v;
        }
        if let Some(v) = m.get("launch_wait").and_then(|n| decode::duration(n, "defaults.launch_wait", diags)) {
            d.launch_wait = v;
        }
        d
    }
}

/// Actions that become modifiers of a step that has another action.
const MODIFIER_ACTIONS: &[&str] = &["verify", "verify_not", "wait_still", "wait_change"];

/// All keys a step map may hold.
pub fn step_keys() -> Vec<&'static str> {
    ACTIONS.iter().chain(MODIFIERS.iter()).map(|(k, _)| *k).collect()
}

/// Which action a step map names, or a diagnostic saying why none or several.
/// `verify`/`verify_not` are expectations when another action is present.
pub fn action_key(node: &Node, diags: &mut Diagnostics) -> Option<String> {
    let entries = match node.as_map() {
        Some(m) => m,
        None => {
            diags.push(
                Diagnostic::new(&node.span, format!("a step must be a map, found {}", node.kind()))
                    .with_help("write e.g. `- type: \"hello\"` or `- key: ctrl+alt+t`"),
            );
            return None;
        }
    };
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e.key.as_str())
        .filter(|k| ACTIONS.iter().any(|(a, _)| a == k) && !MODIFIER_ACTIONS.contains(k))
        .collect();
    match actions.as_slice() {
        [one] => Some(one.to_string()),
        [] if node.get("verify").is_some() || node.get("verify_not").is_some() => Some("verify".into()),
        [] if node.get("wait_still").is_some() || node.get("wait_change").is_some() => Some("screen_wait".into()),
        [] => {
            let names: Vec<&str> = ACTIONS.iter().map(|(a, _)| *a).collect();
            let mut d = Diagnostic::new(&node.span, "this step has no action")
                .with_help(format!("a step has one of: {}", names.join(", ")));
            // a misspelt action key is the usual cause
            for e in entries {
                if MODIFIERS.iter().all(|(m, _)| *m != e.key)
                    && let Some(s) = did_you_mean(&e.key, names.iter().copied())
                {
                    d = Diagnostic::new(&e.key_span, format!("unknown key '{}' in step", e.key))
                        .with_help(format!("did you mean '{s}'?"));
                }
            }
            diags.push(d);
            None
        }
        [first, second, ..] => {
            let e = node.get(second).map(|e| e.key_span.clone()).unwrap_or_else(|| node.span.clone());
            diags.push(
                Diagnostic::new(&e, format!("a step has one action, but this one has '{first}' and '{second}'"))
                    .with_help("split it into two steps"),
            );
            None
        }
    }
}

/// Decode one (rendered) step that is not a routine call.
pub fn decode_step(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<Step> {
    let kind = action_key(node, diags)?;
    let m = MapReader::new(node, "a step", &step_keys(), diags)?;
    let before = diags.len();
    if m.has("with")
        && let Some(e) = m.entry("with")
    {
        diags.push(Diagnostic::new(&e.key_span, "'with' gives inputs to a routine call; this step is not one"));
    }
    let label = m.get("label").and_then(|n| decode::non_empty(n, "label", diags));
    let timeout = m.get("timeout").and_then(|n| decode::duration(n, "timeout", diags));
    let retries = m
        .get("retries")
        .and_then(|n| decode::integer(n, "retries", 0, 100, diags))
        .map_or(defaults.retries, |r| r as u32);
    let mut expect = Vec::new();
    if let Some(n) = m.get("verify") {
        expect.extend(expectations(n, false, defaults, diags));
    }
    if let Some(n) = m.get("verify_not") {
        expect.extend(expectations(n, true, defaults, diags));
    }
    let wait_change = m.get("wait_change").and_then(|n| change_wait(n, diags));
    let wait_still = m.get("wait_still").and_then(|n| still_wait(n, diags));
    for (key, belongs) in [("then", "if_visible"), ("verify_input", "type"), ("precheck_click", "click")] {
        if kind != belongs
            && let Some(e) = m.entry(key)
        {
            diags.push(
                Diagnostic::new(
                    &e.key_span,
                    format!("'{key}' belongs to a '{belongs}' step, and this is a '{kind}' step"),
                )
                .with_help(format!("move it into a '{belongs}' step or remove it")),
            );
        }
    }
    let body = m.get(&kind);
    let action = match kind.as_str() {
        "verify" => Some(Action::Verify),
        "screen_wait" => Some(Action::ScreenWait),
        "shell" => body.and_then(|n| shell(n, diags)).map(Action::Shell),
        "launch" => body.and_then(|n| launch(n, defaults, diags)).map(Action::Launch),
        "key" => body.and_then(|n| key_step(n, diags)),
        "key_down" => body.and_then(|n| keys(n, diags)).map(Action::KeyDown),
        "key_up" => body.and_then(|n| keys(n, diags)).map(Action::KeyUp),
        "type" => body.and_then(|n| type_text(n, diags)).map(|t| {
            if let Some(field) = m.get("verify_input") {
                expect.extend(verify_input(field, &t.text, diags));
            }
            Action::Type(t)
        }),
        "click" => body.and_then(|n| click(n, defaults, diags)).map(|mut c| {
            if let Some(n) = m.get("precheck_click") {
                c.precheck = decode::boolean(n, "precheck_click", diags).unwrap_or(false);
                if c.precheck && !matches!(c.target, Target::Locate { .. }) {
                    diags.push(
                        Diagnostic::new(&n.span, "precheck_click asks the model about a located element")
                            .with_help("use it with `click: {locate: \"...\"}`"),
                    );
                }
            }
            Action::Click(c)
        }),
        "if_visible" => {
            body.and_then(|n| if_visible(n, m.get("then"), &node.span, defaults, diags)).map(Action::IfVisible)
        }
        "move" => body.and_then(|n| move_step(n, defaults, diags)),
        "drag" => body.and_then(|n| drag(n, defaults, diags)).map(Action::Drag),
        "scroll" => body.and_then(|n| scroll(n, defaults, diags)).map(Action::Scroll),
        "wait" => body.and_then(|n| decode::duration(n, "wait", diags)).map(Action::Wait),
        "wait_for" => body.map(|n| {
            expect.splice(0..0, expectations(n, false, defaults, diags));
            Action::WaitFor
        }),
        "screenshot" => body.and_then(|n| screenshot(n, diags)).map(Action::Screenshot),
        "boot" => body.and_then(|n| boot(n, diags)).map(Action::Boot),
        "expect" => body.and_then(|n| serial_expect(n, diags)).map(Action::SerialExpect),
        "send" => body.and_then(|n| serial_send(n, diags)).map(Action::SerialSend),
        "checkpoint" => body.and_then(|n| checkpoint_name(n, diags)).map(Action::Checkpoint),
        "routine" => None, // expanded by the plan; never decoded as a step
        _ => None,
    };
    if diags.len() > before {
        return None;
    }
    Some(Step { label, timeout, retries, action: action?, expect, wait_change, wait_still, span: node.span.clone() })
}

/// A regular expression matched against serial console text.
fn serial_regex(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<regex::Regex> {
    let s = decode::text(node, what, diags)?;
    if s.is_empty() {
        diags.push(Diagnostic::new(&node.span, format!("{what} must not be empty")));
        return None;
    }
    match regex::Regex::new(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            diags.push(
                Diagnostic::new(&node.span, format!("{what} is not a valid regular expression: {e}"))
                    .with_help("escape characters such as ( [ . * + ? with a backslash to match them literally"),
            );
            None
        }
    }
}

/// `boot: {marker, login, timeout, stall, failures}`, `boot: MARKER` or `boot: true`.
fn boot(node: &Node, diags: &mut Diagnostics) -> Option<BootAction> {
    let mut action = BootAction { marker: None, login: true, timeout: None, stall: BOOT_STALL, failures: Vec::new() };
    match &node.value {
        Value::Bool(true) | Value::Null => return Some(action),
        Value::Bool(false) => {
            diags.push(Diagnostic::new(&node.span, "boot: false boots nothing").with_help("remove the step"));
            return None;
        }
        Value::Str(_) => {
            action.marker = Some(serial_regex(node, "boot marker", diags)?);
            return Some(action);
        }
        _ => {}
    }
    let m = MapReader::new(node, "a boot step", BOOT_KEYS, diags)?;
    let before = diags.len();
    action.marker = m.get("marker").and_then(|n| serial_regex(n, "marker", diags));
    if let Some(n) = m.get("login") {
        action.login = decode::boolean(n, "login", diags).unwrap_or(true);
        if !action.login && action.marker.is_none() && !m.has("marker") {
            diags.push(
                Diagnostic::new(&n.span, "login: false without a marker leaves nothing that says the boot is done")
                    .with_help("add `marker: REGEX` (a line your image prints when it is up)"),
            );
        }
    }
    action.timeout = m.get("timeout").and_then(|n| decode::duration(n, "timeout", diags));
    if let Some(n) = m.get("stall") {
        match decode::duration(n, "stall", diags) {
            Some(d) if d.is_zero() => {
                diags.push(Diagnostic::new(&n.span, "stall must be longer than 0s"));
            }
            Some(d) => action.stall = d,
            None => {}
        }
    }
    if let Some(n) = m.get("failures") {
        for item in decode::list(n, "failures", true, diags).unwrap_or_default() {
            if let Some(r) = serial_regex(item, "failure marker", diags) {
                action.failures.push(r);
            }
        }
    }
    (diags.len() == before).then_some(action)
}

/// `expect: {serial: REGEX, timeout: 30s}`.
fn serial_expect(node: &Node, diags: &mut Diagnostics) -> Option<SerialExpect> {
    if !matches!(node.value, Value::Map(_)) {
        diags.push(
            Diagnostic::new(&node.span, format!("expect must be a map, found {}", node.kind()))
                .with_help("write `expect: {serial: \"login: \"}`"),
        );
        return None;
    }
    let m = MapReader::new(node, "an expect step", SERIAL_EXPECT_KEYS, diags)?;
    let pattern = m.required("serial", diags).and_then(|n| serial_regex(n, "serial", diags));
    let timeout = m.get("timeout").and_then(|n| decode::duration(n, "timeout", diags));
    if m.has("timeout") && timeout.is_none() {
        return None;
    }
    Some(SerialExpect { pattern: pattern?, timeout })
}

/// `send: {serial: TEXT}`: backslash escapes are decoded.
fn serial_send(node: &Node, diags: &mut Diagnostics) -> Option<SerialSend> {
    if !matches!(node.value, Value::Map(_)) {
        diags.push(
            Diagnostic::new(&node.span, format!("send must be a map, found {}", node.kind()))
                .with_help("write `send: {serial: \"root\\n\"}`"),
        );
        return None;
    }
    let m = MapReader::new(node, "a send step", SERIAL_SEND_KEYS, diags)?;
    let n = m.required("serial", diags)?;
    let raw = decode::text(n, "serial", diags)?;
    match unescape(&raw) {
        Ok(text) if text.is_empty() => {
            diags.push(Diagnostic::new(&n.span, "send: serial text must not be empty"));
            None
        }
        Ok(text) => Some(SerialSend { text }),
        Err(why) => {
            diags.push(
                Diagnostic::new(&n.span, why)
                    .with_help("escapes: \\n \\r \\t \\e (ESC) \\0 \\xHH \\\\; write \\\\ for a backslash"),
            );
            None
        }
    }
}

/// Decode `\n \r \t \e \0 \xHH \\` in text sent to a serial console.
pub fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('e') => out.push('\u{1b}'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 && b < 0x80 => out.push(char::from(b)),
                    _ => return Err(format!("\\x{hex} is not an escape: write \\x and two hex digits below 80")),
                }
            }
            Some(other) => return Err(format!("unknown escape \\{other}")),
            None => return Err("the text ends with a lone backslash".to_string()),
        }
    }
    Ok(out)
}

/// `checkpoint: NAME`: a letter, then letters, digits, '-' and '_'.
fn checkpoint_name(node: &Node, diags: &mut Diagnostics) -> Option<String> {
    let name = decode::non_empty(node, "checkpoint", diags)?;
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= CHECKPOINT_NAME_MAX;
    if !ok {
        diags.push(
            Diagnostic::new(&node.span, format!("'{name}' is not a checkpoint name"))
                .with_help(format!(
                    "start with a letter; then letters, digits, '-' and '_'; at most {CHECKPOINT_NAME_MAX} characters (it names a VM snapshot)"
                )),
        );
        return None;
    }
    Some(name)
}

/// `wait_still: 1s` or `{for: 1s, region: RECT, tolerance: 8}`.
fn still_wait(node: &Node, diags: &mut Diagnostics) -> Option<StillWait> {
    if !matches!(node.value, Value::Map(_)) {
        let quiet = decode::duration(node, "wait_still", diags)?;
        return Some(StillWait { quiet, region: None, tolerance: 0 });
    }
    let m = MapReader::new(node, "wait_still", WAIT_STILL_KEYS, diags)?;
    let quiet = m.required("for", diags).and_then(|n| decode::duration(n, "for", diags));
    let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
    let tolerance = m.get("tolerance").map_or(Some(0), |n| decode::integer(n, "tolerance", 0, 254, diags));
    Some(StillWait { quiet: quiet?, region, tolerance: tolerance? as u8 })
}

/// `wait_change: true` or `{region: RECT, min_pixels: 1, tolerance: 0}`.
fn change_wait(node: &Node, diags: &mut Diagnostics) -> Option<ChangeWait> {
    if let Value::Bool(b) = node.value {
        if !b {
            diags.push(Diagnostic::new(&node.span, "wait_change: false waits for nothing").with_help("remove it"));
            return None;
        }
        return Some(ChangeWait { region: None, min_pixels: 1, tolerance: 0 });
    }
    let m = MapReader::new(node, "wait_change", WAIT_CHANGE_KEYS, diags)?;
    let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
    let min_pixels = m.get("min_pixels").map_or(Some(1), |n| decode::integer(n, "min_pixels", 1, i64::MAX, diags));
    let tolerance = m.get("tolerance").map_or(Some(0), |n| decode::integer(n, "tolerance", 0, 254, diags));
    Some(ChangeWait { region, min_pixels: min_pixels? as u64, tolerance: tolerance? as u8 })
}

fn shell(node: &Node, diags: &mut Diagnostics) -> Option<ShellAction> {
    if let Value::Str(s) = &node.value {
        if crate::guest::uses_file(s) {
            diags.push(
                Diagnostic::new(&node.span, "the command uses {file}, but the step gives no `file:` pattern")
                    .with_help("write `shell: {command: \"... {file}\", file: \"/opt/app-*/app\"}`"),
            );
            return None;
        }
        return non_blank_command(node, s, diags).map(|command| ShellAction {
            command,
            ok_exit: vec![0],
            file: None,
            save: None,
        });
    }
    let m = MapReader::new(node, "a shell step", SHELL_KEYS, diags)?;
    let command = m.required("command", diags).and_then(|n| decode::non_empty(n, "shell command", diags));
    let file = file_pattern(&m, command.as_deref().map(crate::guest::uses_file), diags);
    let save = match m.get("save") {
        None => None,
        Some(n) => {
            let name = decode::non_empty(n, "save", diags)?;
            if name.contains('/') || name.contains('\\') || name.starts_with('.') {
                diags.push(Diagnostic::new(&n.span, "save takes a file name, without '/' and not starting with '.'"));
                return None;
            }
            Some(name)
        }
    };
    let ok_exit = match m.get("exit") {
        None => Some(vec![0]),
        Some(n) if n.as_str() == Some("any") => Some(Vec::new()),
        Some(n) => decode::list(n, "exit", true, diags).map(|items| {
            items.into_iter().filter_map(|i| decode::integer(i, "exit code", 0, 255, diags)).map(|i| i as i32).collect()
        }),
    };
    Some(ShellAction { command: command?, ok_exit: ok_exit?, file: file.ok()?, save })
}

/// The `file:` pattern of a shell or launch step, checked against the
/// command's use of `{file}` (`uses` is `None` when the command is invalid).
fn file_pattern(m: &MapReader<'_>, uses: Option<bool>, diags: &mut Diagnostics) -> Result<Option<String>, ()> {
    let pattern = match m.get("file") {
        None => None,
        Some(n) => Some((decode::non_empty(n, "file", diags).ok_or(())?, n)),
    };
    match (pattern, uses) {
        (Some((p, _)), Some(true)) => Ok(Some(p)),
        (Some((_, n)), Some(false)) => {
            diags.push(
                Diagnostic::new(&n.span, "`file:` is given, but the command never uses {file}")
                    .with_help("write {file} where the resolved path goes, e.g. `command: [\"{file}\", --flag]`"),
            );
            Err(())
        }
        (None, Some(true)) => {
            diags.push(
                Diagnostic::new(&m.node.span, "the command uses {file}, but the step gives no `file:` pattern")
                    .with_help("add `file: \"/opt/App-*/app\"` (resolved on the target to exactly one file)"),
            );
            Err(())
        }
        (p, _) => Ok(p.map(|(p, _)| p)),
    }
}

fn non_blank_command(node: &Node, s: &str, diags: &mut Diagnostics) -> Option<String> {
    if s.trim().is_empty() {
        diags.push(Diagnostic::new(&node.span, "the command is empty"));
        return None;
    }
    Some(s.to_string())
}

fn command_line(node: &Node, diags: &mut Diagnostics) -> Option<CommandLine> {
    match &node.value {
        Value::Str(s) => non_blank_command(node, s, diags).map(CommandLine::Shell),
        Value::Seq(items) if !items.is_empty() => {
            let argv: Vec<String> = items.iter().filter_map(|i| decode::text(i, "command argument", diags)).collect();
            (argv.len() == items.len()).then_some(CommandLine::Argv(argv))
        }
        _ => {
            diags.push(
                Diagnostic::new(
                    &node.span,
                    format!("command must be a string or a non-empty list, found {}", node.kind()),
                )
                .with_help("write `command: galculator` or `command: [xterm, -fa, Monospace]`"),
            );
            None
        }
    }
}

fn launch(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<LaunchAction> {
    if matches!(node.value, Value::Str(_) | Value::Seq(_)) {
        let command = command_line(node, diags)?;
        if command.uses_file() {
            diags.push(
                Diagnostic::new(&node.span, "the command uses {file}, but the step gives no `file:` pattern")
                    .with_help("write `launch: {command: [\"{file}\"], file: \"/opt/App-*/app\"}`"),
            );
            return None;
        }
        let process = command.program_name();
        return Some(LaunchAction { command, process, until: None, wait: defaults.launch_wait, file: None });
    }
    let m = MapReader::new(node, "a launch step", LAUNCH_KEYS, diags)?;
    let command = m.required("command", diags).and_then(|n| command_line(n, diags));
    let process = m.get("process").and_then(|n| decode::non_empty(n, "process", diags));
    let until = m.get("until").and_then(|n| expectation(n, false, defaults, diags));
    let wait = m.get("wait").map_or(Some(defaults.launch_wait), |n| decode::duration(n, "wait", diags));
    let file = file_pattern(&m, command.as_ref().map(CommandLine::uses_file), diags).ok()?;
    let command = command?;
    let process = process.unwrap_or_else(|| command.program_name());
    if process.is_empty() {
        diags.push(
            Diagnostic::new(&node.span, "cannot tell which process to wait for").with_help("add `process: NAME`"),
        );
        return None;
    }
    Some(LaunchAction { command, process, until, wait: wait?, file })
}

fn keys(node: &Node, diags: &mut Diagnostics) -> Option<Vec<KeyCombo>> {
    let items = decode::list(node, "key", true, diags)?;
    let mut out = Vec::new();
    let before = diags.len();
    for item in items {
        let Some(text) = decode::text(item, "key", diags) else { continue };
        match KeyCombo::parse(&text) {
            Ok(c) => out.push(c),
            Err(e) => {
                let mut d = Diagnostic::new(&item.span, e.to_string());
                if let Some(h) = e.help() {
                    d = d.with_help(h);
                }
                diags.push(d);
            }
        }
    }
    if out.is_empty() && diags.len() == before {
        diags.push(Diagnostic::new(&node.span, "key needs at least one key combo"));
    }
    (diags.len() == before).then_some(out)
}

/// `key: COMBO`, `key: [COMBO, ...]` or `key: {combo: COMBO, hold: 2s}`.
fn key_step(node: &Node, diags: &mut Diagnostics) -> Option<Action> {
    if !matches!(node.value, Value::Map(_)) {
        return keys(node, diags).map(Action::Key);
    }
    let m = MapReader::new(node, "a key step", KEY_HOLD_KEYS, diags)?;
    let combo = m.required("combo", diags).and_then(|n| keys(n, diags));
    let hold = m.get("hold").and_then(|n| decode::duration(n, "hold", diags));
    let mut combo = combo?;
    match (combo.len(), hold) {
        (1, Some(hold)) => Some(Action::KeyHold(combo.remove(0), hold)),
        (_, None) => Some(Action::Key(combo)),
        (_, Some(_)) => {
            diags.push(
                Diagnostic::new(&node.span, "hold takes one combo")
                    .with_help("hold keys one after another in separate steps"),
            );
            None
        }
    }
}

/// `move: TARGET`, or a target map with `path` and `duration`.
fn move_step(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<Action> {
    let (t, _, _) = target(node, "move target", defaults, diags)?;
    let Some(m) = node.as_map() else { return Some(Action::Move(t)) };
    let get = |k: &str| m.iter().find(|e| e.key == k).map(|e| &e.value);
    let path = get("path").and_then(|n| path_kind(n, diags));
    let duration = get("duration").and_then(|n| decode::duration(n, "duration", diags));
    match (path, duration) {
        (None, None) => Some(Action::Move(t)),
        (path, duration) => {
            Some(Action::MoveAlong(t, path.unwrap_or(PathKind::Bezier), duration.unwrap_or(Duration::from_millis(300))))
        }
    }
}

fn path_kind(node: &Node, diags: &mut Diagnostics) -> Option<PathKind> {
    let s = decode::string(node, "path", diags)?;
    let kind = PathKind::parse(&s);
    if kind.is_none() {
        diags.push(
            Diagnostic::new(&node.span, format!("unknown path '{s}'"))
                .with_help(format!("use {}", PATH_KINDS.join(" or "))),
        );
    }
    kind
}

/// `drag: {from: TARGET, to: TARGET, button, path, duration, dwell}`.
fn drag(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<DragAction> {
    let m = MapReader::new(node, "a drag step", DRAG_KEYS, diags)?;
    let from = m.required("from", diags).and_then(|n| target(n, "drag start", defaults, diags));
    let to = m.required("to", diags).and_then(|n| target(n, "drag end", defaults, diags));
    let button = match m.get("button") {
        None => Some(Button::Left),
        Some(n) => {
            let s = decode::string(n, "button", diags)?;
            let b = Button::parse(&s);
            if b.is_none() {
                diags.push(
                    Diagnostic::new(&n.span, format!("unknown button '{s}'")).with_help("use left, middle or right"),
                );
            }
            b
        }
    };
    let path = m.get("path").map_or(Some(PathKind::Linear), |n| path_kind(n, diags));
    let duration =
        m.get("duration").map_or(Some(Duration::from_millis(300)), |n| decode::duration(n, "duration", diags));
    let dwell = m.get("dwell").map_or(Some(Duration::from_millis(100)), |n| decode::duration(n, "dwell", diags));
    Some(DragAction { from: from?.0, to: to?.0, button: button?, path: path?, duration: duration?, dwell: dwell? })
}

/// `scroll: down` or `{direction: down, count: 3, at: TARGET}`.
fn scroll(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<ScrollAction> {
    let direction_of = |n: &Node, diags: &mut Diagnostics| {
        let s = decode::string(n, "direction", diags)?;
        let d = ScrollDirection::parse(&s);
        if d.is_none() {
            diags.push(
                Diagnostic::new(&n.span, format!("unknown scroll direction '{s}'"))
                    .with_help(format!("use {}", SCROLL_DIRECTIONS.join(", "))),
            );
        }
        d
    };
    if !matches!(node.value, Value::Map(_)) {
        return direction_of(node, diags).map(|direction| ScrollAction { at: None, direction, count: 1 });
    }
    let m = MapReader::new(node, "a scroll step", SCROLL_KEYS, diags)?;
    let direction = m.required("direction", diags).and_then(|n| direction_of(n, diags));
    let count = m.get("count").map_or(Some(1), |n| decode::integer(n, "count", 1, 1000, diags));
    let at = match m.get("at") {
        None => None,
        Some(n) => Some(target(n, "scroll position", defaults, diags)?.0),
    };
    Some(ScrollAction { at, direction: direction?, count: count? as u32 })
}

fn type_text(node: &Node, diags: &mut Diagnostics) -> Option<TypeAction> {
    let (text, interval, confirm) = match &node.value {
        Value::Map(_) => {
            let m = MapReader::new(node, "a type step", TYPE_KEYS, diags)?;
            let text = m.required("text", diags).and_then(|n| decode::text(n, "text", diags));
            let interval = m.get("interval").and_then(|n| decode::duration(n, "interval", diags));
            let confirm = m.get("confirm").and_then(|n| decode::boolean(n, "confirm", diags));
            (text?, interval, confirm)
        }
        _ => (decode::text(node, "type", diags)?, None, None),
    };
    if let Err((i, c)) = crate::input::type_text(&text, None) {
        diags.push(
            Diagnostic::new(&node.span, format!("character {} of the text ({:?}) cannot be typed", i + 1, c))
                .with_help("use a key step for control keys"),
        );
        return None;
    }
    Some(TypeAction { text, interval, confirm })
}

fn click(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<ClickAction> {
    if let Some(m) = node.as_map() {
        for e in m.iter().filter(|e| e.key == "path" || e.key == "duration") {
            diags.push(
                Diagnostic::new(&e.key_span, format!("'{}' applies to move steps", e.key))
                    .with_help("move along a path in a move step first, then click"),
            );
        }
    }
    let (target, button, double) = target(node, "click target", defaults, diags)?;
    Some(ClickAction { target, button, double, precheck: false })
}

/// `if_visible: QUESTION` (or `{question, region}`) with its `then:` steps.
fn if_visible(
    node: &Node,
    then: Option<&Node>,
    step: &Span,
    defaults: &Defaults,
    diags: &mut Diagnostics,
) -> Option<IfVisible> {
    let (question, region) = match &node.value {
        Value::Map(_) => {
            let m = MapReader::new(node, "if_visible", IF_VISIBLE_KEYS, diags)?;
            let q = m.required("question", diags).and_then(|n| question(n, diags));
            (q, m.get("region").and_then(|n| decode::rect(n, "region", diags)))
        }
        _ => (question(node, diags), None),
    };
    let Some(then) = then else {
        diags.push(
            Diagnostic::new(step, "if_visible needs the steps to run when the answer is yes")
                .with_help("add `then:` with a list of steps, e.g. `then: [{click: {text: Close}}]`"),
        );
        return None;
    };
    let items = decode::list(then, "then", false, diags)?;
    if items.is_empty() {
        diags.push(Diagnostic::new(&then.span, "an empty `then:` does nothing").with_help("give it steps"));
    }
    let mut steps = Vec::new();
    for n in items {
        if n.get("routine").is_some() {
            diags.push(
                Diagnostic::new(&n.span, "a routine call cannot run inside `then:`")
                    .with_help("write the steps here, or make the guard the routine's first step"),
            );
            continue;
        }
        if n.get("if_visible").is_some() {
            diags.push(Diagnostic::new(&n.span, "guards do not nest").with_help("give each guard its own step"));
            continue;
        }
        if let Some(st) = decode_step(n, defaults, diags) {
            steps.push(st);
        }
    }
    Some(IfVisible { question: question?, region, then: steps })
}

/// A question for the model: a non-empty line of text.
fn question(node: &Node, diags: &mut Diagnostics) -> Option<String> {
    let q = decode::non_empty(node, "question", diags)?;
    Some(q.trim().to_string())
}

/// `verify_input: FIELD` on a `type` step: a VLM check that the text landed there.
fn verify_input(node: &Node, text: &str, diags: &mut Diagnostics) -> Option<Expect> {
    let field = question(node, diags)?;
    let shown = text.trim_end_matches(['\n', '\r']);
    Some(Expect {
        check: Check::Vlm(VlmCheck {
            question: format!("Does {field} contain the text \"{shown}\" (typed into it, not elsewhere)?"),
            region: None,
            accept_any: false,
            consistent: 1,
            decide_first: Vec::new(),
            without_secrets: Some(format!(
                "Has text been typed into {field} (it may show as dots or asterisks), and is the rest of the form unchanged?"
            )),
        }),
        negate: false,
        span: node.span.clone(),
    })
}

/// A click or move target with its button options.
fn target(node: &Node, what: &str, defaults: &Defaults, diags: &mut Diagnostics) -> Option<(Target, Button, bool)> {
    match &node.value {
        Value::Seq(_) => return decode::point(node, what, diags).map(|p| (Target::At(p), Button::Left, false)),
        Value::Str(s) => {
            let query = TextMatch::Contains { text: s.clone(), case_sensitive: true };
            return Some((Target::Text { query, region: None, offset: (0, 0) }, Button::Left, false));
        }
        Value::Int(_) | Value::Float(_) => {
            let text = decode::text(node, what, diags)?;
            let query = TextMatch::Contains { text, case_sensitive: true };
            return Some((Target::Text { query, region: None, offset: (0, 0) }, Button::Left, false));
        }
        _ => {}
    }
    let m = MapReader::new(node, what, TARGET_KEYS, diags)?;
    let before = diags.len();
    let button = match m.get("button") {
        None => Button::Left,
        Some(n) => match decode::string(n, "button", diags).map(|s| (Button::parse(&s), s)) {
            Some((Some(b), _)) => b,
            Some((None, s)) => {
                diags.push(
                    Diagnostic::new(&n.span, format!("unknown button '{s}'")).with_help("use left, middle or right"),
                );
                Button::Left
            }
            None => Button::Left,
        },
    };
    let double = m.get("double").and_then(|n| decode::boolean(n, "double", diags)).unwrap_or(false);
    let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
    let offset = match m.get("offset") {
        None => (0, 0),
        Some(n) => match n.as_seq() {
            Some([dx, dy]) => (
                decode::integer(dx, "offset x", -65535, 65535, diags).unwrap_or(0) as i32,
                decode::integer(dy, "offset y", -65535, 65535, diags).unwrap_or(0) as i32,
            ),
            _ => {
                diags.push(Diagnostic::new(&n.span, "offset must be [dx, dy]"));
                (0, 0)
            }
        },
    };
    let kinds: Vec<&str> =
        ["x", "at", "text", "regex", "image", "needle", "locate"].into_iter().filter(|k| m.has(k)).collect();
    let target = match kinds.as_slice() {
        ["x"] => {
            let y = m.required("y", diags);
            let p = decode::point(
                &Node::new(node.span.clone(), Value::Seq(vec![m.get("x")?.clone(), y?.clone()])),
                what,
                diags,
            );
            p.map(Target::At)
        }
        ["at"] => m.get("at").and_then(|n| decode::point(n, "at", diags)).map(Target::At),
        ["text"] | ["regex"] => text_match(&m, diags).map(|query| Target::Text { query, region, offset }),
        ["locate"] => m.get("locate").and_then(|n| question(n, diags)).map(|description| Target::Locate {
            description,
            region,
            offset,
        }),
        ["needle"] => {
            let n = m.get("needle")?;
            let name = decode::non_empty(n, "needle", diags);
            let point = m.get("point").and_then(|p| decode::non_empty(p, "point", diags));
            let threshold = m.get("threshold").and_then(|t| decode::number(t, "threshold", 0.0, 1.0, diags));
            Some(Target::Needle {
                needle: Reference { name: name?, span: n.span.clone(), path: None },
                point,
                threshold,
                region,
                offset,
            })
        }
        [_] => {
            let n = m.get("image")?;
            let name = decode::non_empty(n, "image", diags);
            let threshold = m
                .get("threshold")
                .map_or(Some(defaults.image_threshold), |t| decode::number(t, "threshold", 0.0, 1.0, diags));
            Some(Target::Image {
                reference: Reference { name: name?, span: n.span.clone(), path: None },
                region,
                threshold: threshold?,
                offset,
            })
        }
        [] => {
            diags.push(
                Diagnostic::new(&node.span, format!("{what} needs a place: x/y, at, text, regex, image, needle or locate"))
                    .with_help("e.g. `click: [100, 200]`, `click: {text: \"OK\"}`, `click: {image: ok.png}` or `click: {needle: ok_dialog, point: ok}`"),
            );
            None
        }
        [a, b, ..] => {
            diags.push(Diagnostic::new(&node.span, format!("{what} has both '{a}' and '{b}'; give one place")));
            None
        }
    };
    if m.has("y") && !m.has("x") {
        diags.push(Diagnostic::new(&node.span, format!("{what} has 'y' without 'x'")));
    }
    if m.has("threshold") && !m.has("image") && !m.has("needle") {
        diags.push(Diagnostic::new(
            &m.entry("threshold")?.key_span,
            "'threshold' applies to image and needle targets only",
        ));
    }
    if m.has("point") && !m.has("needle") {
        diags.push(Diagnostic::new(&m.entry("point")?.key_span, "'point' names a click point of a needle target"));
    }
    if m.has("max_distance") && !m.has("text") {
        diags.push(Diagnostic::new(&m.entry("max_distance")?.key_span, "'max_distance' applies to text targets only"));
    }
    if diags.len() > before {
        return None;
    }
    Some((target?, button, double))
}

/// `text:` (with `case_sensitive:`) or `regex:` from a map.
fn text_match(m: &MapReader<'_>, diags: &mut Diagnostics) -> Option<TextMatch> {
    let case_sensitive =
        m.get("case_sensitive").and_then(|n| decode::boolean(n, "case_sensitive", diags)).unwrap_or(true);
    let max_distance =
        m.get("max_distance").and_then(|n| decode::integer(n, "max_distance", 0, 1000, diags)).unwrap_or(0) as u32;
    if let (Some(d), Some(_)) = (m.entry("max_distance"), m.get("regex")) {
        diags.push(
            Diagnostic::new(&d.key_span, "'max_distance' applies to 'text', not to 'regex'")
                .with_help("write the tolerance into the regex, or match text"),
        );
        return None;
    }
    match (m.get("text"), m.get("regex")) {
        (Some(t), None) => {
            let text = decode::text(t, "text", diags)?;
            if text.trim().is_empty() {
                diags.push(Diagnostic::new(&t.span, "text must not be empty"));
                return None;
            }
            if max_distance > 0 {
                if max_distance as usize >= text.trim().chars().count() {
                    diags.push(
                        Diagnostic::new(
                            &m.entry("max_distance")?.value.span,
                            format!("max_distance {max_distance} would let any text of that length match"),
                        )
                        .with_help("allow fewer edits than the text has characters (1 or 2 per 10 characters)"),
                    );
                    return None;
                }
                return Some(TextMatch::Fuzzy { text, case_sensitive, max_distance });
            }
            Some(TextMatch::Contains { text, case_sensitive })
        }
        (None, Some(r)) => {
            let pattern = decode::string(r, "regex", diags)?;
            let pattern = if case_sensitive { pattern } else { format!("(?i){pattern}") };
            match regex::Regex::new(&pattern) {
                Ok(re) => Some(TextMatch::Regex(re)),
                Err(e) => {
                    diags.push(Diagnostic::new(&r.span, format!("invalid regex: {}", one_line(&e.to_string()))));
                    None
                }
            }
        }
        (Some(_), Some(r)) => {
            diags.push(Diagnostic::new(&r.span, "give either 'text' or 'regex', not both"));
            None
        }
        (None, None) => {
            diags.push(Diagnostic::new(&m.node.span, "needs 'text' or 'regex'"));
            None
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn screenshot(node: &Node, diags: &mut Diagnostics) -> Option<ScreenshotAction> {
    let action = match &node.value {
        Value::Str(_) => ScreenshotAction { name: decode::non_empty(node, "screenshot", diags)?, region: None },
        _ => {
            let m = MapReader::new(node, "a screenshot step", SCREENSHOT_KEYS, diags)?;
            let name = m.required("name", diags).and_then(|n| decode::non_empty(n, "name", diags));
            let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
            ScreenshotAction { name: name?, region }
        }
    };
    if action.name.contains('/') || action.name.contains('\\') || action.name.starts_with('.') {
        diags.push(Diagnostic::new(
            &node.span,
            "a screenshot name is a file name, without '/' and not starting with '.'",
        ));
        return None;
    }
    Some(action)
}

/// One check or a list of checks.
pub fn expectations(node: &Node, negate: bool, defaults: &Defaults, diags: &mut Diagnostics) -> Vec<Expect> {
    let Some(items) = decode::list(node, "verify", true, diags) else { return Vec::new() };
    if items.is_empty() {
        diags.push(Diagnostic::new(&node.span, "an empty list of checks checks nothing"));
    }
    items.into_iter().filter_map(|n| expectation(n, negate, defaults, diags)).collect()
}

/// One check: a map with one kind key (`ocr`, `ssim`).
pub fn expectation(node: &Node, negate: bool, defaults: &Defaults, diags: &mut Diagnostics) -> Option<Expect> {
    let kinds: Vec<&str> = CHECK_KINDS.iter().map(|(k, _)| *k).collect();
    let m = MapReader::new(node, "a check", &kinds, diags)?;
    let present: Vec<&str> = kinds.iter().copied().filter(|k| m.has(k)).collect();
    let check = match present.as_slice() {
        ["ocr"] => ocr(m.get("ocr")?, diags).map(Check::Ocr),
        ["needle"] => needle(m.get("needle")?, diags).map(Check::Needle),
        ["vlm"] => vlm_check(m.get("vlm")?, defaults, diags).map(Check::Vlm),
        [_] => ssim(m.get("ssim")?, defaults, diags).map(Check::Ssim),
        [] => {
            if m.entries().is_empty() {
                diags.push(Diagnostic::new(&node.span, format!("a check needs a kind: {}", kinds.join(", "))));
            }
            None
        }
        [a, b, ..] => {
            diags.push(
                Diagnostic::new(&node.span, format!("a check has one kind, found '{a}' and '{b}'"))
                    .with_help("give a list of checks to check several things"),
            );
            None
        }
    }?;
    Some(Expect { check, negate, span: node.span.clone() })
}

/// `vlm: QUESTION` or `{question, region, accept_any, consistent, decide_first}`.
fn vlm_check(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<VlmCheck> {
    if !matches!(node.value, Value::Map(_)) {
        let q = question(node, diags)?;
        return Some(VlmCheck {
            question: q,
            region: None,
            accept_any: false,
            consistent: 1,
            decide_first: Vec::new(),
            without_secrets: None,
        });
    }
    let m = MapReader::new(node, "a vlm check", VLM_KEYS, diags)?;
    let before = diags.len();
    let q = m.required("question", diags).and_then(|n| question(n, diags));
    let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
    let accept_any = m.get("accept_any").and_then(|n| decode::boolean(n, "accept_any", diags)).unwrap_or(false);
    let consistent =
        m.get("consistent").and_then(|n| decode::integer(n, "consistent", 1, 15, diags)).unwrap_or(1) as u32;
    if let (Some(n), false, true) = (m.get("consistent"), accept_any, consistent.is_multiple_of(2)) {
        diags.push(
            Diagnostic::new(&n.span, format!("consistent: {consistent} can tie"))
                .with_help("use an odd number of samples for a majority (3, 5), or set accept_any"),
        );
    }
    let mut decide_first = Vec::new();
    if let Some(n) = m.get("decide_first") {
        for e in expectations(n, false, defaults, diags) {
            if matches!(e.check, Check::Vlm(_)) {
                diags.push(Diagnostic::new(
                    &e.span,
                    "decide_first names cheaper checks (ocr, needle, ssim), not another vlm",
                ));
                continue;
            }
            decide_first.push(e);
        }
    }
    if diags.len() > before {
        return None;
    }
    Some(VlmCheck { question: q?, region, accept_any, consistent, decide_first, without_secrets: None })
}

fn ocr(node: &Node, diags: &mut Diagnostics) -> Option<OcrCheck> {
    match &node.value {
        Value::Str(_) | Value::Int(_) | Value::Float(_) => {
            let text = decode::text(node, "ocr", diags)?;
            if text.trim().is_empty() {
                diags.push(Diagnostic::new(&node.span, "ocr text must not be empty"));
                return None;
            }
            Some(OcrCheck {
                query: TextMatch::Contains { text, case_sensitive: true },
                region: None,
                variants: Vec::new(),
            })
        }
        _ => {
            let m = MapReader::new(node, "an ocr check", OCR_KEYS, diags)?;
            let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
            let variants = match m.get("variants") {
                None => Vec::new(),
                Some(n) => ocr_variants(n, diags)?,
            };
            let query = text_match(&m, diags)?;
            Some(OcrCheck { query, region, variants })
        }
    }
}

fn ocr_variants(node: &Node, diags: &mut Diagnostics) -> Option<Vec<crate::vision::ocr::OcrVariant>> {
    use crate::vision::ocr::OcrVariant;
    let before = diags.len();
    let mut out = Vec::new();
    for item in decode::list(node, "variants", true, diags)? {
        let Some(name) = decode::string(item, "variant", diags) else { continue };
        match OcrVariant::ALL.iter().find(|v| v.name() == name) {
            Some(v) if !out.contains(v) => out.push(*v),
            Some(_) => diags.push(Diagnostic::new(&item.span, format!("variant '{name}' is listed twice"))),
            None => {
                let mut d = Diagnostic::new(&item.span, format!("unknown OCR variant '{name}'"))
                    .with_help(format!("variants: {}", OCR_VARIANTS.join(", ")));
                if let Some(s) = did_you_mean(&name, OCR_VARIANTS.iter().copied()) {
                    d = d.with_help(format!("did you mean '{s}'?"));
                }
                diags.push(d);
            }
        }
    }
    if out.is_empty() && diags.len() == before {
        diags.push(Diagnostic::new(&node.span, "variants must name at least one variant"));
    }
    (diags.len() == before).then_some(out)
}

/// `needle: NAME` or `{name: NAME, threshold: 0.9, region: RECT}`.
fn needle(node: &Node, diags: &mut Diagnostics) -> Option<NeedleCheck> {
    if let Value::Str(_) = node.value {
        let name = decode::non_empty(node, "needle", diags)?;
        return Some(NeedleCheck {
            needle: Reference { name, span: node.span.clone(), path: None },
            threshold: None,
            region: None,
        });
    }
    let m = MapReader::new(node, "a needle check", NEEDLE_KEYS, diags)?;
    let needle = m.required("name", diags).and_then(|n| {
        decode::non_empty(n, "name", diags).map(|name| Reference { name, span: n.span.clone(), path: None })
    });
    let threshold = m.get("threshold").and_then(|n| decode::number(n, "threshold", 0.0, 1.0, diags));
    let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
    Some(NeedleCheck { needle: needle?, threshold, region })
}

fn ssim(node: &Node, defaults: &Defaults, diags: &mut Diagnostics) -> Option<SsimCheck> {
    if let Value::Str(_) = node.value {
        let name = decode::non_empty(node, "ssim reference", diags)?;
        return Some(SsimCheck {
            reference: Reference { name, span: node.span.clone(), path: None },
            region: None,
            mask: Vec::new(),
            threshold: defaults.ssim_threshold,
            window: SsimWindowKind::Gaussian,
            colour: false,
            regions: Vec::new(),
        });
    }
    let m = MapReader::new(node, "an ssim check", SSIM_KEYS, diags)?;
    let reference = m.required("reference", diags).and_then(|n| {
        decode::non_empty(n, "reference", diags).map(|name| Reference { name, span: n.span.clone(), path: None })
    });
    let region = m.get("region").and_then(|n| decode::rect(n, "region", diags));
    let mask = match m.get("mask") {
        None => Vec::new(),
        Some(n) => {
            // one rectangle, or a list of rectangles
            let is_single =
                n.as_seq().is_some_and(|s| s.len() == 4 && s.iter().all(|i| matches!(i.value, Value::Int(_))))
                    || n.as_map().is_some();
            if is_single {
                decode::rect(n, "mask", diags).into_iter().collect()
            } else {
                decode::list(n, "mask", false, diags)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| decode::rect(r, "mask rectangle", diags))
                    .collect()
            }
        }
    };
    let threshold =
        m.get("threshold").map_or(Some(defaults.ssim_threshold), |n| decode::number(n, "threshold", 0.0, 1.0, diags));
    let window = match m.get("window") {
        None => SsimWindowKind::Gaussian,
        Some(n) => match decode::string(n, "window", diags).as_deref() {
            Some("gaussian") | None => SsimWindowKind::Gaussian,
            Some("box") => SsimWindowKind::Box,
            Some(other) => {
                diags.push(
                    Diagnostic::new(&n.span, format!("unknown SSIM window '{other}'")).with_help("use gaussian or box"),
                );
                SsimWindowKind::Gaussian
            }
        },
    };
    let colour = m.get("colour").and_then(|n| decode::boolean(n, "colour", diags)).unwrap_or(false);
    let mut regions = Vec::new();
    if let Some(n) = m.get("regions") {
        for item in decode::list(n, "regions", true, diags).unwrap_or_default() {
            let Some(rm) = MapReader::new(item, "an ssim region", SSIM_REGION_KEYS, diags) else { continue };
            let r = rm.required("region", diags).and_then(|n| decode::rect(n, "region", diags));
            let t = rm.get("threshold").map_or(threshold, |n| decode::number(n, "threshold", 0.0, 1.0, diags));
            let name = rm.get("name").and_then(|n| decode::non_empty(n, "name", diags));
            if let (Some(r), Some(outer)) = (r, region)
                && !outer.contains_rect(&r)
            {
                diags.push(
                    Diagnostic::new(&item.span, format!("region {r} lies outside the check's region {outer}"))
                        .with_help("regions are screen rectangles inside the compared area"),
                );
                continue;
            }
            if let (Some(region), Some(threshold)) = (r, t) {
                regions.push(SsimRegion { name, region, threshold });
            }
        }
    }
    Some(SsimCheck { reference: reference?, region, mask, threshold: threshold?, window, colour, regions })
}

/// The reference images a step uses (SSIM checks, image targets).
pub fn references(step: &Step) -> Vec<&Reference> {
    let mut out = Vec::new();
    let checks = step.expect.iter().chain(match &step.action {
        Action::Launch(l) => l.until.as_ref(),
        _ => None,
    });
    for e in checks {
        expect_references(e, &mut out);
    }
    match &step.action {
        Action::Click(ClickAction { target: Target::Image { reference, .. }, .. })
        | Action::Move(Target::Image { reference, .. })
        | Action::MoveAlong(Target::Image { reference, .. }, ..)
        | Action::Scroll(ScrollAction { at: Some(Target::Image { reference, .. }), .. }) => out.push(reference),
        Action::Drag(d) => {
            for t in [&d.from, &d.to] {
                if let Target::Image { reference, .. } = t {
                    out.push(reference);
                }
            }
        }
        Action::IfVisible(g) => out.extend(g.then.iter().flat_map(references)),
        _ => {}
    }
    out
}

fn expect_references<'a>(e: &'a Expect, out: &mut Vec<&'a Reference>) {
    match &e.check {
        Check::Ssim(c) => out.push(&c.reference),
        Check::Vlm(v) => v.decide_first.iter().for_each(|d| expect_references(d, out)),
        _ => {}
    }
}

/// A generated label for a step without one, e.g. `type "12+30="`.
pub fn default_label(step: &Step) -> String {
    let short = |s: &str| {
        let one: String = s.replace('\n', "⏎");
        if one.chars().count() > 40 { format!("{}…", one.chars().take(40).collect::<String>()) } else { one }
    };
    let checks = || {
        step.expect
            .iter()
            .map(|e| format!("{}{}", if e.negate { "not " } else { "" }, e.check.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &step.action {
        Action::Shell(s) => format!("shell {}", short(&s.command)),
        Action::Launch(l) => format!("launch {}", short(&l.command.display())),
        Action::Key(k) => format!("key {}", k.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(", ")),
        Action::KeyHold(k, d) => format!("hold {} {}ms", k.text, d.as_millis()),
        Action::KeyDown(k) => format!("key down {}", k.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(", ")),
        Action::KeyUp(k) => format!("key up {}", k.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(", ")),
        Action::Type(t) => format!("type \"{}\"", short(&t.text)),
        Action::Click(c) => format!("click {}", describe_target(&c.target)),
        Action::Move(t) | Action::MoveAlong(t, ..) => format!("move {}", describe_target(t)),
        Action::Drag(d) => format!("drag {} to {}", describe_target(&d.from), describe_target(&d.to)),
        Action::Scroll(s) => format!(
            "scroll {:?} x{}{}",
            s.direction,
            s.count,
            s.at.as_ref().map(|t| format!(" at {}", describe_target(t))).unwrap_or_default()
        )
        .to_lowercase(),
        Action::Wait(d) => format!("wait {}ms", d.as_millis()),
        Action::IfVisible(g) => format!("if visible: {}", short(&g.question)),
        Action::WaitFor => format!("wait for {}", checks()),
        Action::ScreenWait => match (&step.wait_change, &step.wait_still) {
            (Some(_), Some(s)) => format!("wait for a change, then {}ms still", s.quiet.as_millis()),
            (Some(_), None) => "wait for a change".into(),
            (None, Some(s)) => format!("wait until still for {}ms", s.quiet.as_millis()),
            (None, None) => "wait".into(),
        },
        Action::Verify => format!("verify {}", checks()),
        Action::Screenshot(s) => format!("screenshot {}", s.name),
        Action::Boot(b) => match &b.marker {
            Some(m) => format!("boot until /{}/", short(m.as_str())),
            None => "boot until a login prompt".into(),
        },
        Action::SerialExpect(e) => format!("expect serial /{}/", short(e.pattern.as_str())),
        Action::SerialSend(s) => format!("send serial \"{}\"", short(&s.text.escape_default().to_string())),
        Action::Checkpoint(name) => format!("checkpoint {name}"),
    }
}

pub fn describe_target(t: &Target) -> String {
    match t {
        Target::At(p) => p.to_string(),
        Target::Text { query, .. } => format!("text {query}"),
        Target::Image { reference, .. } => format!("image {}", reference.name),
        Target::Needle { needle, point, .. } => match point {
            Some(p) => format!("needle {} point {p}", needle.name),
            None => format!("needle {}", needle.name),
        },
        Target::Locate { description, .. } => format!("located \"{description}\""),
    }
}

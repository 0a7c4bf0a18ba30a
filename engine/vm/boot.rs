//! Boot classification from the serial console's text: how far an OS image
//! got (firmware -> bootloader -> kernel -> userspace -> login) and how the
//! boot ended (BOOTED, BOOT-FAILED, STALLED, TIMEOUT).
//!
//! Pure: [`BootWatch`] is fed text with the time it arrived and asked for a
//! decision with the current time and whether the VM still runs; the runner
//! does the reading and the waiting. Lines are recognised by patterns of the
//! usual firmware (SeaBIOS, OVMF/EDK II, iPXE), bootloaders (GRUB, ISOLINUX,
//! systemd-boot, the EFI stub), the Linux kernel, init systems (systemd,
//! busybox, dracut, SysV) and getty; a scenario adds its own ready marker and
//! failure markers.

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// How far a boot got, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Firmware,
    Bootloader,
    Kernel,
    Userspace,
    /// A login prompt or the scenario's ready marker.
    Login,
}

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::Firmware, Stage::Bootloader, Stage::Kernel, Stage::Userspace, Stage::Login];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Firmware => "firmware",
            Stage::Bootloader => "bootloader",
            Stage::Kernel => "kernel",
            Stage::Userspace => "userspace",
            Stage::Login => "login",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootOutcome {
    /// The login prompt or ready marker appeared.
    Booted,
    /// A failure marker appeared (kernel panic, oops, emergency mode, no root
    /// file system), or the VM stopped before it booted.
    BootFailed,
    /// The serial console stayed silent for longer than `stall` after the kernel started.
    Stalled,
    /// The overall budget ran out.
    Timeout,
}

/// Exit code of a run whose boot step failed.
pub const EXIT_BOOT_FAILED: i32 = 10;
/// Exit code of a run whose boot stalled.
pub const EXIT_STALLED: i32 = 11;
/// Exit code of a run whose boot ran out of time.
pub const EXIT_BOOT_TIMEOUT: i32 = 12;

impl BootOutcome {
    /// BOOTED, BOOT-FAILED, STALLED, TIMEOUT.
    pub fn label(self) -> &'static str {
        match self {
            BootOutcome::Booted => "BOOTED",
            BootOutcome::BootFailed => "BOOT-FAILED",
            BootOutcome::Stalled => "STALLED",
            BootOutcome::Timeout => "TIMEOUT",
        }
    }

    /// The process exit code of a run that ended this way (BOOTED passes).
    pub fn exit_code(self) -> i32 {
        match self {
            BootOutcome::Booted => 0,
            BootOutcome::BootFailed => EXIT_BOOT_FAILED,
            BootOutcome::Stalled => EXIT_STALLED,
            BootOutcome::Timeout => EXIT_BOOT_TIMEOUT,
        }
    }

    pub fn passed(self) -> bool {
        self == BootOutcome::Booted
    }
}

/// Lines that show a stage was reached, as (stage, pattern).
pub const STAGE_PATTERNS: &[(Stage, &str)] = &[
    (Stage::Firmware, r"SeaBIOS \(version"),
    (Stage::Firmware, r"iPXE \("),
    (Stage::Firmware, r"BdsDxe: |EDK II|UEFI Interactive Shell|Press ESC in \d+ seconds"),
    (Stage::Firmware, r"Booting from (Hard Disk|ROM|DVD/CD|CD-Rom|Floppy|Disk)"),
    (Stage::Firmware, r"Press (ESC|F12) for boot menu"),
    (Stage::Bootloader, r"GNU GRUB|GRUB loading|Welcome to GRUB|grub>"),
    (Stage::Bootloader, r"ISOLINUX|SYSLINUX|PXELINUX|EXTLINUX"),
    (Stage::Bootloader, r"systemd-boot|Boot Loader Specification"),
    (Stage::Bootloader, r"Loading Linux|Loading initial ramdisk|EFI stub: |Booting `"),
    (Stage::Kernel, r"Linux version \d"),
    (Stage::Kernel, r"Decompressing Linux|Booting the kernel"),
    (Stage::Kernel, r"^\[\s*\d+\.\d{6}\] "),
    (Stage::Kernel, r"^(Command line: |BIOS-provided physical RAM map|KASLR )"),
    (Stage::Userspace, r"Run /\S*init as init process|Run \S+ as init process"),
    (Stage::Userspace, r"systemd\[1\]|^Welcome to .+!\s*$|INIT: version|^OpenRC "),
    (Stage::Userspace, r"\[\s+OK\s+\] |dracut(-\w+)?\[\d+\]|Starting \S.*\.\.\.$|Reached target "),
    (Stage::Login, r"(^|\s)\S+ login: ?$|^login: ?$"),
];

/// Lines that end a boot as BOOT-FAILED, with the reason given in the result.
pub const FAILURE_PATTERNS: &[(&str, &str)] = &[
    (r"Kernel panic - not syncing|---\[ end Kernel panic", "kernel panic"),
    (r"\bOops: |BUG: unable to handle|general protection fault: ", "kernel oops"),
    (r"dracut-initqueue.*timeout|Could not boot\.", "initramfs timed out finding the root device"),
    (r"emergency mode|Give root password for maintenance|Entering emergency", "emergency mode"),
    (r"Unable to mount root|VFS: Cannot open root device|ALERT! .* does not exist", "no root file system"),
    (r"No working init found|Kernel panic - not syncing: Attempted to kill init", "init died"),
    (r"No bootable device|Boot failed: |FATAL: No bootable", "no bootable device"),
];

/// What a boot step looks for and how long it waits.
#[derive(Debug, Clone)]
pub struct BootRules {
    /// The ready marker (the scenario's `marker`); `None`: a login prompt.
    pub marker: Option<Regex>,
    /// Also count a getty login prompt as booted when a marker is given.
    pub login: bool,
    /// The scenario's failure markers, checked along with [`FAILURE_PATTERNS`].
    pub failures: Vec<Regex>,
    /// Silence after the kernel started that counts as a stall.
    pub stall: Duration,
    /// The whole boot's budget.
    pub timeout: Duration,
}

/// A pattern that matched, where and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub stage: Stage,
    /// Milliseconds since the watch started.
    pub at_ms: u64,
    /// The line that showed it (cut to 200 characters).
    pub line: String,
    /// Which line of the transcript (0-based): orders hits that arrived together.
    pub line_no: u64,
}

/// Why the boot failed (a failure marker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureHit {
    pub reason: String,
    pub at_ms: u64,
    pub line: String,
    pub line_no: u64,
}

/// The classification of a boot so far (or at its end).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootReport {
    pub outcome: Option<BootOutcome>,
    /// The furthest stage reached, if any was recognised.
    pub stage: Option<Stage>,
    /// The first line of each stage reached, in order.
    pub stages: Vec<Hit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureHit>,
    /// Milliseconds of serial silence when the decision was made.
    pub silent_ms: u64,
    pub elapsed_ms: u64,
    /// One sentence for the step's error and the console.
    pub summary: String,
}

/// Follows one boot.
#[derive(Debug)]
pub struct BootWatch {
    rules: BootRules,
    stage_res: Vec<(Stage, Regex)>,
    failure_res: Vec<(Regex, String)>,
    /// Text after the last newline (a prompt without a newline is matched here).
    pending: String,
    /// Whether `pending` has already been matched as it stands.
    pending_seen: usize,
    stages: Vec<Hit>,
    failure: Option<FailureHit>,
    last_output: Duration,
    any_output: bool,
    /// Complete lines seen so far.
    lines: u64,
}

impl BootWatch {
    pub fn new(rules: BootRules) -> BootWatch {
        // the built-in tables are constants checked by a test; a pattern that
        // does not compile is dropped rather than failing a boot
        let stage_res =
            STAGE_PATTERNS.iter().filter_map(|(s, p)| Regex::new(p).ok().map(|r| (*s, r))).collect::<Vec<_>>();
        let mut failure_res: Vec<(Regex, String)> =
            FAILURE_PATTERNS.iter().filter_map(|(p, why)| Regex::new(p).ok().map(|r| (r, why.to_string()))).collect();
        for r in &rules.failures {
            failure_res.push((r.clone(), format!("failure marker /{}/", r.as_str())));
        }
        BootWatch {
            rules,
            stage_res,
            failure_res,
            pending: String::new(),
            pending_seen: 0,
            stages: Vec::new(),
            failure: None,
            last_output: Duration::ZERO,
            any_output: false,
            lines: 0,
        }
    }

    pub fn rules(&self) -> &BootRules {
        &self.rules
    }

    /// Text that arrived at `at` (since the watch started). `\r` and NUL are
    /// dropped; complete lines are matched, and so is an unfinished last line
    /// (prompts end without a newline).
    pub fn feed(&mut self, text: &str, at: Duration) {
        if text.is_empty() {
            return;
        }
        self.any_output = true;
        self.last_output = self.last_output.max(at);
        for c in text.chars() {
            match c {
                '\n' => {
                    let line = std::mem::take(&mut self.pending);
                    self.pending_seen = 0;
                    self.line(&line, at, true);
                    self.lines += 1;
                }
                '\r' | '\0' => {}
                c => self.pending.push(c),
            }
        }
        if self.pending.len() != self.pending_seen && !self.pending.is_empty() {
            self.pending_seen = self.pending.len();
            let line = self.pending.clone();
            self.line(&line, at, false);
        }
    }

    fn line(&mut self, line: &str, at: Duration, complete: bool) {
        let line = line.trim_end();
        if line.trim().is_empty() {
            return;
        }
        let at_ms = at.as_millis() as u64;
        let line_no = self.lines;
        let short = || line.chars().take(200).collect::<String>();
        // failures are judged on complete lines only (a panic line always ends)
        if complete
            && self.failure.is_none()
            && let Some((_, why)) = self.failure_res.iter().find(|(r, _)| r.is_match(line))
        {
            self.failure = Some(FailureHit { reason: why.clone(), at_ms, line: short(), line_no });
        }
        let ready = match &self.rules.marker {
            Some(m) => m.is_match(line) || (self.rules.login && self.is_login(line)),
            None => self.is_login(line),
        };
        let mut found: Vec<Stage> = Vec::new();
        if ready {
            found.push(Stage::Login);
        }
        // an unfinished line is only checked for prompts and failures: it may still grow
        if complete {
            for (s, r) in &self.stage_res {
                if *s != Stage::Login && r.is_match(line) && !found.contains(s) {
                    found.push(*s);
                }
            }
        }
        for s in found {
            if !self.stages.iter().any(|h| h.stage == s) {
                self.stages.push(Hit { stage: s, at_ms, line: short(), line_no });
            }
        }
    }

    fn is_login(&self, line: &str) -> bool {
        self.stage_res.iter().any(|(s, r)| *s == Stage::Login && r.is_match(line))
    }

    /// The furthest stage recognised. A later stage implies the earlier ones
    /// (a quiet kernel prints nothing before init).
    pub fn stage(&self) -> Option<Stage> {
        self.stages.iter().map(|h| h.stage).max()
    }

    /// The outcome at `now`, when there is one: a ready line wins over
    /// silence, a failure marker over a ready line seen later; `exited` says
    /// the VM stopped.
    pub fn decide(&self, now: Duration, exited: bool) -> Option<BootOutcome> {
        let booted = self.stages.iter().find(|h| h.stage == Stage::Login);
        match (&self.failure, booted) {
            (Some(f), Some(b)) if b.line_no < f.line_no => return Some(BootOutcome::Booted),
            (Some(_), _) => return Some(BootOutcome::BootFailed),
            (None, Some(_)) => return Some(BootOutcome::Booted),
            (None, None) => {}
        }
        if exited {
            return Some(BootOutcome::BootFailed);
        }
        if self.stage().is_some_and(|s| s >= Stage::Kernel) && self.silence(now) > self.rules.stall {
            return Some(BootOutcome::Stalled);
        }
        if now >= self.rules.timeout {
            return Some(BootOutcome::Timeout);
        }
        None
    }

    /// How long the console has been silent at `now`.
    pub fn silence(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_output)
    }

    /// The report at `now` for `outcome`.
    pub fn report(&self, outcome: Option<BootOutcome>, now: Duration, exited: bool) -> BootReport {
        let stage = self.stage();
        let reached = stage.map(|s| format!("furthest stage: {s}")).unwrap_or_else(|| {
            if self.any_output {
                "no boot stage recognised".into()
            } else {
                "the serial console printed nothing".into()
            }
        });
        let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
        let summary = match outcome {
            Some(BootOutcome::Booted) => {
                let line = self.stages.iter().find(|h| h.stage == Stage::Login).map(|h| h.line.as_str()).unwrap_or("");
                format!("BOOTED in {} (\"{line}\")", secs(now))
            }
            Some(BootOutcome::BootFailed) => match &self.failure {
                Some(f) => format!("BOOT-FAILED: {} (\"{}\"); {reached}", f.reason, f.line),
                None if exited => format!("BOOT-FAILED: the VM stopped before it booted; {reached}"),
                None => format!("BOOT-FAILED; {reached}"),
            },
            Some(BootOutcome::Stalled) => format!(
                "STALLED: the serial console was silent for {} (stall limit {}); {reached}",
                secs(self.silence(now)),
                secs(self.rules.stall)
            ),
            Some(BootOutcome::Timeout) => {
                format!("TIMEOUT: not booted within {}; {reached}", secs(self.rules.timeout))
            }
            None => format!("booting for {}; {reached}", secs(now)),
        };
        BootReport {
            outcome,
            stage,
            stages: self.stages.clone(),
            failure: self.failure.clone(),
            silent_ms: self.silence(now).as_millis() as u64,
            elapsed_ms: now.as_millis() as u64,
            summary,
        }
    }
}

/// Classify a whole transcript at once (all text at time zero, judged at
/// `now`): for tests and for `smoke` tools that read a saved serial log.
pub fn classify(transcript: &str, rules: BootRules, now: Duration, exited: bool) -> BootReport {
    let mut w = BootWatch::new(rules);
    w.feed(transcript, Duration::ZERO);
    w.report(w.decide(now, exited), now, exited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(marker: Option<&str>) -> BootRules {
        BootRules {
            marker: marker.map(|m| Regex::new(m).unwrap()),
            login: true,
            failures: Vec::new(),
            stall: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        }
    }

    /// Debian 12 cloud image under SeaBIOS + GRUB with console=ttyS0, trimmed.
    const DEBIAN_GRUB: &str = "SeaBIOS (version 1.16.3-debian-1.16.3-2)\r\n\r\n\r\niPXE (https://ipxe.org) 00:03.0 CA00 PCI2.10 PnP PMM+06FC6B40+06F06B40 CA00\r\n\r\nBooting from Hard Disk...\r\n\x1b[2J\x1b[1;1H                             GNU GRUB  version 2.06-13+deb12u1\r\n\r\nBooting `Debian GNU/Linux'\r\n\r\nLoading Linux 6.1.0-28-cloud-amd64 ...\r\nLoading initial ramdisk ...\r\n[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)\r\n[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-cloud-amd64 root=PARTUUID=0a1b console=tty0 console=ttyS0,115200\r\n[    1.734021] Run /init as init process\r\nLoading, please wait...\r\nStarting systemd-udevd version 252.31-1~deb12u1\r\n[    3.101990] systemd[1]: Inserted module 'autofs4'\r\n\r\nWelcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!\r\n\r\n[  \x1b[0;32mOK\x1b[0m  ] Reached target Local File Systems.\r\n\r\nDebian GNU/Linux 12 localhost ttyS0\r\n\r\nlocalhost login: ";

    /// The tiny test guest: direct kernel boot, `quiet`, busybox init with a marker.
    const TEST_GUEST: &str = "[    0.000000] Linux version 6.1.0-41-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1\r\n[    0.000000] Command line: console=ttyS0 console=tty0\r\n[    0.912345] Run /init as init process\r\nSMOKE-GUEST-READY\r\n~ # ";

    const PANIC: &str = "[    0.000000] Linux version 6.1.0-41-cloud-amd64\r\n[    0.701234] Run /init as init process\r\nSMOKE-PANIC-GUEST: exiting PID 1\r\n[    0.803311] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000\r\n[    0.804000] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-41-cloud-amd64 #1\r\n[    0.809000] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000 ]---\r\n";

    const DRACUT: &str = "[    1.0] Linux version 5.14.0-427.el9.x86_64\r\n[    2.500000] Run /init as init process\r\n[  OK  ] Reached target Initrd Root Device.\r\n[  183.1] dracut-initqueue[312]: Warning: dracut-initqueue: timeout, still waiting for following initqueue hooks:\r\n[  183.2] dracut-initqueue[312]: Warning: /lib/dracut/hooks/initqueue/finished/devexists-\\x2fdev\\x2fmapper\\x2frhel-root.sh: \"[ -e \"/dev/mapper/rhel-root\" ]\"\r\nWarning: /dev/mapper/rhel-root does not exist\r\n\r\nGenerating \"/run/initramfs/rdsosreport.txt\"\r\n\r\nEntering emergency mode. Exit the shell to continue.\r\n";

    #[test]
    fn patterns_compile() {
        for (_, p) in STAGE_PATTERNS {
            Regex::new(p).unwrap();
        }
        for (p, _) in FAILURE_PATTERNS {
            Regex::new(p).unwrap();
        }
    }

    #[test]
    fn a_full_boot_climbs_every_stage_to_the_login_prompt() {
        let r = classify(DEBIAN_GRUB, rules(None), Duration::from_secs(1), false);
        assert_eq!(r.outcome, Some(BootOutcome::Booted), "{}", r.summary);
        let stages: Vec<Stage> = r.stages.iter().map(|h| h.stage).collect();
        assert_eq!(stages, Stage::ALL.to_vec());
        assert_eq!(r.stage, Some(Stage::Login));
        assert_eq!(r.stages[0].line, "SeaBIOS (version 1.16.3-debian-1.16.3-2)");
        assert!(r.stages[1].line.contains("GNU GRUB"));
        assert!(r.stages[2].line.contains("Linux version 6.1.0-28"));
        assert!(r.stages[3].line.contains("Run /init"));
        assert_eq!(r.stages[4].line, "localhost login:");
        assert!(r.summary.starts_with("BOOTED in 1.0s"), "{}", r.summary);
    }

    #[test]
    fn a_marker_decides_and_a_login_prompt_still_counts() {
        let r = classify(TEST_GUEST, rules(Some("SMOKE-GUEST-READY")), Duration::from_secs(7), false);
        assert_eq!(r.outcome, Some(BootOutcome::Booted));
        assert_eq!(r.stages.last().map(|h| h.line.as_str()), Some("SMOKE-GUEST-READY"));
        // without the marker nothing says "login"; the shell prompt is not one
        let r = classify(TEST_GUEST, rules(None), Duration::from_secs(1), false);
        assert_eq!(r.outcome, None);
        assert_eq!(r.stage, Some(Stage::Userspace));
        // a marker given, login allowed: the getty prompt of a full image
        let r = classify(DEBIAN_GRUB, rules(Some("NEVER-PRINTED")), Duration::from_secs(1), false);
        assert_eq!(r.outcome, Some(BootOutcome::Booted));
        let mut only = rules(Some("NEVER-PRINTED"));
        only.login = false;
        assert_eq!(classify(DEBIAN_GRUB, only, Duration::from_secs(1), false).outcome, None);
    }

    #[test]
    fn a_prompt_without_newline_is_seen_once_complete() {
        let mut w = BootWatch::new(rules(None));
        w.feed(
            "[    0.1] Linux version 6.1\r\nDebian GNU/Linux 12 host ttyS0\r\n\r\nhost lo",
            Duration::from_millis(100),
        );
        assert_eq!(w.decide(Duration::from_millis(100), false), None);
        w.feed("gin: ", Duration::from_millis(200));
        assert_eq!(w.decide(Duration::from_millis(200), false), Some(BootOutcome::Booted));
        assert_eq!(w.report(None, Duration::ZERO, false).stages.last().map(|h| h.at_ms), Some(200));
    }

    #[test]
    fn a_kernel_panic_fails_the_boot_and_says_where() {
        let r = classify(PANIC, rules(Some("SMOKE-GUEST-READY")), Duration::from_secs(3), false);
        assert_eq!(r.outcome, Some(BootOutcome::BootFailed));
        assert_eq!(r.stage, Some(Stage::Userspace));
        let f = r.failure.unwrap();
        assert_eq!(f.reason, "kernel panic");
        assert!(f.line.contains("Kernel panic - not syncing: Attempted to kill init!"));
        assert!(r.summary.starts_with("BOOT-FAILED: kernel panic (\"[    0.803311] Kernel panic"), "{}", r.summary);
        assert!(r.summary.ends_with("furthest stage: userspace"), "{}", r.summary);
        assert_eq!(BootOutcome::BootFailed.exit_code(), 10);
    }

    #[test]
    fn dracut_timeouts_and_emergency_mode_fail() {
        let r = classify(DRACUT, rules(None), Duration::from_secs(200), false);
        assert_eq!(r.outcome, Some(BootOutcome::BootFailed));
        assert_eq!(r.failure.unwrap().reason, "initramfs timed out finding the root device");
        let r = classify(
            "[ 1.0] Linux version 6\r\nYou are in emergency mode. After logging in, type \"journalctl -xb\"\r\n",
            rules(None),
            Duration::ZERO,
            false,
        );
        assert_eq!(r.failure.map(|f| f.reason), Some("emergency mode".to_string()));
        let r = classify(
            "[ 2.1] VFS: Cannot open root device \"sda1\" or unknown-block(0,0): error -6\r\n",
            rules(None),
            Duration::ZERO,
            false,
        );
        assert_eq!(r.failure.map(|f| f.reason), Some("no root file system".to_string()));
        let r = classify("[ 4.2] Oops: 0002 [#1] PREEMPT SMP NOPTI\r\n", rules(None), Duration::ZERO, false);
        assert_eq!(r.failure.map(|f| f.reason), Some("kernel oops".to_string()));
    }

    #[test]
    fn scenario_failure_markers_count_too() {
        let mut r = rules(Some("READY"));
        r.failures.push(Regex::new("app crashed: .*").unwrap());
        let report =
            classify("[ 1.0] Linux version 6\nwelcome\napp crashed: segfault\nREADY\n", r, Duration::ZERO, false);
        assert_eq!(report.outcome, Some(BootOutcome::BootFailed));
        assert_eq!(report.failure.unwrap().reason, "failure marker /app crashed: .*/");
    }

    #[test]
    fn silence_after_the_kernel_is_a_stall_but_before_it_only_a_timeout() {
        let hang = "[    0.0] Linux version 6.1.0\r\n[    0.9] Run /init as init process\r\nSMOKE-HANG-GUEST: starting\r\nSMOKE-HANG-GUEST: going quiet\r\n";
        let mut w = BootWatch::new(BootRules { stall: Duration::from_secs(3), ..rules(Some("NEVER")) });
        w.feed(hang, Duration::from_secs(2));
        assert_eq!(w.decide(Duration::from_millis(4900), false), None);
        assert_eq!(w.decide(Duration::from_millis(5100), false), Some(BootOutcome::Stalled));
        let r = w.report(Some(BootOutcome::Stalled), Duration::from_millis(5100), false);
        assert!(
            r.summary.starts_with("STALLED: the serial console was silent for 3.1s (stall limit 3.0s)"),
            "{}",
            r.summary
        );
        assert_eq!(r.stage, Some(Stage::Userspace));
        assert_eq!(BootOutcome::Stalled.exit_code(), 11);

        // a GRUB menu waiting is not a stall; the budget decides
        let mut w = BootWatch::new(BootRules { stall: Duration::from_secs(3), ..rules(None) });
        w.feed("SeaBIOS (version 1.16)\r\n GNU GRUB  version 2.06\r\n", Duration::ZERO);
        assert_eq!(w.decide(Duration::from_secs(30), false), None);
        assert_eq!(w.decide(Duration::from_secs(60), false), Some(BootOutcome::Timeout));
        let r = w.report(Some(BootOutcome::Timeout), Duration::from_secs(60), false);
        assert_eq!(r.summary, "TIMEOUT: not booted within 60.0s; furthest stage: bootloader");
        assert_eq!(BootOutcome::Timeout.exit_code(), 12);
    }

    #[test]
    fn a_vm_that_stops_before_booting_failed() {
        let w = BootWatch::new(rules(None));
        assert_eq!(w.decide(Duration::from_secs(1), true), Some(BootOutcome::BootFailed));
        let r = w.report(Some(BootOutcome::BootFailed), Duration::from_secs(1), true);
        assert_eq!(r.summary, "BOOT-FAILED: the VM stopped before it booted; the serial console printed nothing");
    }

    #[test]
    fn booted_before_a_later_failure_stays_booted() {
        let r = classify("READY\n[ 9.0] Oops: 0000 [#1]\n", rules(Some("READY")), Duration::ZERO, false);
        assert_eq!(r.outcome, Some(BootOutcome::Booted));
    }
}

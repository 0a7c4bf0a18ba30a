//! The screen as the runner drives it: fresh captures, key and text input
//! with a throttle, pointer moves and clicks with a settle time, each input
//! reported as an event (text redacted by the event log).

use std::time::Duration;

use crate::events::{Event, EventLog};
use crate::frame::Frame;
use crate::geometry::Point;
use crate::input::pointer::{PathKind, ScrollDirection};
use crate::input::text::{KeyEvent, release_modifiers};
use crate::input::{Button, KeyCombo, Layout, keysym, pointer, type_text};
use crate::rfb::{RfbError, VncClient};

/// The box around the pointer that typing confirmation ignores.
const CURSOR_BOX: u32 = 48;

/// Whether two frames differ anywhere outside `mask`.
fn differs_outside(a: &Frame, b: &Frame, mask: crate::geometry::Rect) -> bool {
    if (a.width(), a.height()) != (b.width(), b.height()) {
        return true;
    }
    let stride = a.width() as usize * 4;
    let (mx0, mx1) = ((mask.x as usize * 4).min(stride), ((mask.x + mask.w) as usize * 4).min(stride));
    a.pixels().chunks_exact(stride).zip(b.pixels().chunks_exact(stride)).enumerate().any(|(y, (ra, rb))| {
        let y = y as u32;
        if y >= mask.y && y < mask.y + mask.h { ra[..mx0] != rb[..mx0] || ra[mx1..] != rb[mx1..] } else { ra != rb }
    })
}

/// Characters typed between two screen checks of a confirmed `type`.
pub const CONFIRM_CHUNK: usize = 8;
/// Between pointer moves along a path.
const PATH_STEP: Duration = Duration::from_millis(10);

/// Why input failed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Rfb(#[from] RfbError),
    /// A confirmed `type` chunk that changed nothing on the screen.
    #[error(
        "typed {text:?} (characters {first}-{last} of the text) but the screen did not change within {secs:.1}s: \
         the text was lost (is the right window focused and taking input?)"
    )]
    Lost { text: String, first: usize, last: usize, secs: f64 },
}

/// How a `type` goes: the throttle, and whether each chunk must show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeOptions {
    /// Between characters.
    pub interval: Duration,
    /// When set, after each chunk of [`CONFIRM_CHUNK`] characters wait up to
    /// this long for the screen to change.
    pub confirm: Option<Duration>,
}

/// How a drag goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DragOptions {
    pub button: Button,
    pub path: PathKind,
    /// Time spent moving from start to end.
    pub duration: Duration,
    /// Pause after pressing and before releasing (apps start a drag only
    /// after the pointer rested a moment).
    pub dwell: Duration,
}

/// How long a single capture may take before the VNC server counts as stalled.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Input and capture on one VNC connection.
pub struct Screen {
    client: VncClient,
    events: EventLog,
    pointer: Point,
    /// The target's keyboard layout, for scancodes.
    layout: Layout,
    /// Combos pressed by `key_down` and not yet released.
    held: Vec<KeyCombo>,
    /// The target's typing settings.
    typing: TargetTyping,
}

/// What a target says about typing (its inventory entry).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetTyping {
    pub interval: Option<Duration>,
    pub confirm: Option<bool>,
}

impl Screen {
    pub fn new(client: VncClient, events: EventLog) -> Screen {
        Screen {
            client,
            events,
            pointer: Point::new(0, 0),
            layout: Layout::default(),
            held: Vec::new(),
            typing: TargetTyping::default(),
        }
    }

    /// Use `layout` to pick keys when the server takes scancodes.
    pub fn with_layout(mut self, layout: Layout) -> Screen {
        self.layout = layout;
        self
    }

    /// Use the target's typing settings.
    pub fn with_typing(mut self, typing: TargetTyping) -> Screen {
        self.typing = typing;
        self
    }

    pub fn typing(&self) -> TargetTyping {
        self.typing
    }

    /// The layout to send scancodes for, or `None` when the server only
    /// takes keysyms.
    fn scancode_layout(&self) -> Option<Layout> {
        self.client.takes_scancodes().then_some(self.layout)
    }

    async fn send_keys(&self, events: &[KeyEvent]) -> Result<(), RfbError> {
        for ev in events {
            self.client.key_code(ev.keysym, ev.scancode, ev.down).await?;
        }
        Ok(())
    }

    pub fn client(&self) -> &VncClient {
        &self.client
    }

    pub fn size(&self) -> (u32, u32) {
        self.client.size()
    }

    /// A frame that reflects the screen after this call.
    pub async fn capture(&self) -> Result<Frame, RfbError> {
        self.client.capture(CAPTURE_TIMEOUT).await
    }

    /// Press key combos one after another.
    pub async fn keys(&self, step: usize, combos: &[KeyCombo], gap: Duration) -> Result<(), RfbError> {
        let layout = self.scancode_layout();
        for (i, combo) in combos.iter().enumerate() {
            let mut events = combo.events_on(layout);
            self.sync_caps(&mut events);
            self.send_keys(&events).await?;
            self.events.emit(Event::Input {
                step,
                action: "key".into(),
                detail: combo.text.clone(),
                at: None,
                events: Some(events.len()),
            });
            if i + 1 < combos.len() {
                tokio::time::sleep(gap).await;
            }
        }
        Ok(())
    }

    /// Type text as `opts` say; with confirmation, a chunk that changed
    /// nothing on the screen is [`InputError::Lost`].
    pub async fn type_with(&self, step: usize, text: &str, opts: TypeOptions) -> Result<(), InputError> {
        let layout = self.scancode_layout();
        let mut groups = type_text(text, layout).map_err(|(i, c)| RfbError::Unsupported {
            what: format!("character {} ({c:?}) of the text to type", i + 1),
        })?;
        for group in &mut groups {
            self.sync_caps(group);
        }
        let chars: Vec<char> = text.chars().collect();
        let chunk = if opts.confirm.is_some() { CONFIRM_CHUNK } else { groups.len().max(1) };
        let mut count = 0;
        let sent = async {
            for (c, part) in groups.chunks(chunk).enumerate() {
                let before = match opts.confirm {
                    Some(_) => Some(self.capture().await?),
                    None => None,
                };
                for (i, group) in part.iter().enumerate() {
                    self.send_keys(group).await?;
                    count += group.len();
                    let last = c * chunk + i + 1 == groups.len();
                    if !last && !opts.interval.is_zero() {
                        tokio::time::sleep(opts.interval).await;
                    }
                }
                if let (Some(budget), Some(before)) = (opts.confirm, before) {
                    let first = c * chunk;
                    if !self.changed_since(&before, budget).await? {
                        let last = first + part.len();
                        return Err(InputError::Lost {
                            text: chars[first..last].iter().collect(),
                            first: first + 1,
                            last,
                            secs: budget.as_secs_f64(),
                        });
                    }
                }
            }
            Ok::<(), InputError>(())
        }
        .await;
        // every modifier released, whatever happened above
        let held: Vec<u32> = self.held_keysyms().collect();
        let releases: Vec<KeyEvent> =
            release_modifiers(layout.is_some()).into_iter().filter(|e| !held.contains(&e.keysym)).collect();
        let released = self.send_keys(&releases).await;
        sent?;
        released?;
        self.events.emit(Event::Input {
            step,
            action: "type".into(),
            detail: text.to_string(),
            at: None,
            events: Some(count),
        });
        Ok(())
    }

    /// Whether fresh frames differ from `before` within `budget`, apart from
    /// the pointer's own picture (servers without the cursor pseudo-encoding
    /// draw it into the framebuffer, and it changes on its own).
    async fn changed_since(&self, before: &Frame, budget: Duration) -> Result<bool, RfbError> {
        let deadline = tokio::time::Instant::now() + budget;
        let p = self.pointer;
        let cursor = crate::geometry::Rect::new(
            p.x.saturating_sub(CURSOR_BOX / 4),
            p.y.saturating_sub(CURSOR_BOX / 4),
            CURSOR_BOX,
            CURSOR_BOX,
        );
        loop {
            if differs_outside(&self.capture().await?, before, cursor) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Press a combo, hold it for `hold`, release it.
    pub async fn key_hold(&self, step: usize, combo: &KeyCombo, hold: Duration) -> Result<(), RfbError> {
        let layout = self.scancode_layout();
        self.send_keys(&combo.press(layout)).await?;
        tokio::time::sleep(hold).await;
        self.send_keys(&combo.release(layout)).await?;
        self.events.emit(Event::Input {
            step,
            action: "key".into(),
            detail: format!("{} held {}ms", combo.text, hold.as_millis()),
            at: None,
            events: Some(combo.events_on(layout).len()),
        });
        Ok(())
    }

    /// Press combos and keep them down until [`Screen::key_up`] (or
    /// [`Screen::release_held`]).
    pub async fn key_down(&mut self, step: usize, combos: &[KeyCombo]) -> Result<(), RfbError> {
        let layout = self.scancode_layout();
        for combo in combos {
            self.send_keys(&combo.press(layout)).await?;
            self.held.push(combo.clone());
            self.events.emit(Event::Input {
                step,
                action: "key_down".into(),
                detail: combo.text.clone(),
                at: None,
                events: Some(combo.press(layout).len()),
            });
        }
        Ok(())
    }

    /// Release combos (in reverse order).
    pub async fn key_up(&mut self, step: usize, combos: &[KeyCombo]) -> Result<(), RfbError> {
        let layout = self.scancode_layout();
        for combo in combos.iter().rev() {
            self.send_keys(&combo.release(layout)).await?;
            self.held.retain(|h| h.key != combo.key || h.modifiers != combo.modifiers);
            self.events.emit(Event::Input {
                step,
                action: "key_up".into(),
                detail: combo.text.clone(),
                at: None,
                events: Some(combo.release(layout).len()),
            });
        }
        Ok(())
    }

    /// Release every combo `key_down` left pressed (at the end of a run).
    pub async fn release_held(&mut self) -> Result<(), RfbError> {
        let layout = self.scancode_layout();
        while let Some(combo) = self.held.pop() {
            self.send_keys(&combo.release(layout)).await?;
        }
        Ok(())
    }

    /// While `key_down` holds Shift, letters come out in upper case: send
    /// their upper-case keysyms (servers that sync caps lock from the keysym
    /// would toggle it otherwise).
    fn sync_caps(&self, events: &mut [KeyEvent]) {
        if !self.held_keysyms().any(|k| k == keysym::SHIFT_L || k == keysym::SHIFT_R) {
            return;
        }
        for ev in events {
            if let Some(c) = char::from_u32(ev.keysym).filter(|c| c.is_ascii_lowercase()) {
                ev.keysym = c.to_ascii_uppercase() as u32;
            }
        }
    }

    /// Keysyms of every key `key_down` holds (modifiers included).
    fn held_keysyms(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.iter().flat_map(|c| c.modifiers.iter().copied().chain(std::iter::once(c.key)))
    }

    /// The keys `key_down` holds.
    pub fn held(&self) -> &[KeyCombo] {
        &self.held
    }

    async fn pointer_to(&mut self, at: Point, buttons: u8) -> Result<(), RfbError> {
        self.client.pointer(at.x.min(65535) as u16, at.y.min(65535) as u16, buttons).await?;
        self.pointer = at;
        Ok(())
    }

    /// Move along a path to `to` in about `duration`, `buttons` held.
    async fn travel(&mut self, to: Point, path: PathKind, duration: Duration, buttons: u8) -> Result<(), RfbError> {
        let steps = (duration.as_millis() / PATH_STEP.as_millis()).clamp(1, 500) as u32;
        let points = pointer::path(self.pointer, to, path, steps);
        let gap = duration / points.len().max(1) as u32;
        for p in points {
            self.pointer_to(p, buttons).await?;
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        Ok(())
    }

    /// Press `opts.button` at `from`, move along a path to `to`, release.
    pub async fn drag(&mut self, step: usize, from: Point, to: Point, opts: DragOptions) -> Result<(), RfbError> {
        self.move_to(step, from).await?;
        tokio::time::sleep(opts.dwell).await;
        let mask = opts.button.mask();
        self.pointer_to(from, mask).await?;
        tokio::time::sleep(opts.dwell).await;
        self.travel(to, opts.path, opts.duration, mask).await?;
        tokio::time::sleep(opts.dwell).await;
        self.pointer_to(to, 0).await?;
        self.events.emit(Event::Input {
            step,
            action: "drag".into(),
            detail: format!("{from} to {to}"),
            at: Some(to),
            events: None,
        });
        Ok(())
    }

    /// Move along a human-like path to `at` in about `duration`.
    pub async fn move_along(
        &mut self,
        step: usize,
        at: Point,
        path: PathKind,
        duration: Duration,
    ) -> Result<(), RfbError> {
        if self.pointer == at || duration.is_zero() {
            return self.move_to(step, at).await;
        }
        self.travel(at, path, duration, 0).await?;
        self.events.emit(Event::Input {
            step,
            action: "move".into(),
            detail: at.to_string(),
            at: Some(at),
            events: None,
        });
        Ok(())
    }

    /// Turn the wheel `count` clicks at `at` (or where the pointer is).
    pub async fn scroll(
        &mut self,
        step: usize,
        at: Option<Point>,
        direction: ScrollDirection,
        count: u32,
    ) -> Result<(), RfbError> {
        let at = at.unwrap_or(self.pointer);
        if self.pointer != at {
            self.pointer_to(at, 0).await?;
        }
        let events = pointer::scroll(at, direction, count);
        for ev in &events {
            self.pointer_to(ev.at, ev.buttons).await?;
            if ev.buttons == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        self.events.emit(Event::Input {
            step,
            action: "scroll".into(),
            detail: format!(
                "{} x{count}",
                serde_json::to_value(direction).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ),
            at: Some(at),
            events: Some(events.len()),
        });
        Ok(())
    }

    /// Move the pointer. A move to where it already is still produces motion
    /// (QEMU ignores a move to its current position).
    pub async fn move_to(&mut self, step: usize, at: Point) -> Result<(), RfbError> {
        let (x, y) = (at.x.min(65535) as u16, at.y.min(65535) as u16);
        if self.pointer == at {
            let nudge = if x > 0 { x - 1 } else { x + 1 };
            self.client.pointer(nudge, y, 0).await?;
        }
        self.client.pointer(x, y, 0).await?;
        self.pointer = at;
        self.events.emit(Event::Input {
            step,
            action: "move".into(),
            detail: at.to_string(),
            at: Some(at),
            events: None,
        });
        Ok(())
    }

    /// Click (or double-click) at a point, then wait `settle` so focus moves
    /// before the next keys are sent.
    pub async fn click(
        &mut self,
        step: usize,
        at: Point,
        button: Button,
        double: bool,
        settle: Duration,
    ) -> Result<(), RfbError> {
        if self.pointer != at {
            self.client.pointer(at.x.min(65535) as u16, at.y.min(65535) as u16, 0).await?;
        }
        let evs = pointer::click(at, button, double);
        for (i, ev) in evs.iter().enumerate() {
            self.client.pointer(ev.at.x.min(65535) as u16, ev.at.y.min(65535) as u16, ev.buttons).await?;
            if i + 1 < evs.len() {
                // real mice do not press and release in the same microsecond
                tokio::time::sleep(Duration::from_millis(if ev.buttons == 0 { 60 } else { 30 })).await;
            }
        }
        self.pointer = at;
        let what = format!(
            "{}{}",
            if double { "double " } else { "" },
            serde_json::to_value(button).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        );
        self.events.emit(Event::Input {
            step,
            action: "click".into(),
            detail: what,
            at: Some(at),
            events: Some(evs.len()),
        });
        tokio::time::sleep(settle).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;

    #[test]
    fn changes_under_the_pointer_do_not_count() {
        let a = Frame::new(100, 50);
        let mut b = a.clone();
        b.set_rgb(20, 20, [255, 0, 0]);
        assert!(!differs_outside(&a, &b, Rect::new(10, 10, 48, 48)));
        assert!(differs_outside(&a, &b, Rect::new(30, 10, 48, 48)));
        b.set_rgb(99, 49, [1, 2, 3]);
        assert!(differs_outside(&a, &b, Rect::new(10, 10, 48, 48)));
        assert!(differs_outside(&a, &Frame::new(100, 51), Rect::new(0, 0, 1, 1)));
    }
}

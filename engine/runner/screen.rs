//! The screen as the runner drives it: fresh captures, key and text input
//! with a throttle, pointer moves and clicks with a settle time, each input
//! reported as an event (text redacted by the event log).

use std::time::Duration;

use crate::events::{Event, EventLog};
use crate::frame::Frame;
use crate::geometry::Point;
use crate::input::text::{KeyEvent, release_modifiers};
use crate::input::{Button, KeyCombo, Layout, pointer, type_text};
use crate::rfb::{RfbError, VncClient};

/// How long a single capture may take before the VNC server counts as stalled.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Input and capture on one VNC connection.
pub struct Screen {
    client: VncClient,
    events: EventLog,
    pointer: Point,
    /// The target's keyboard layout, for scancodes.
    layout: Layout,
}

impl Screen {
    pub fn new(client: VncClient, events: EventLog) -> Screen {
        Screen { client, events, pointer: Point::new(0, 0), layout: Layout::default() }
    }

    /// Use `layout` to pick keys when the server takes scancodes.
    pub fn with_layout(mut self, layout: Layout) -> Screen {
        self.layout = layout;
        self
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
            let events = combo.events_on(layout);
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

    /// Type text, one character per `interval`, Shift sent explicitly.
    pub async fn type_text(&self, step: usize, text: &str, interval: Duration) -> Result<(), RfbError> {
        let layout = self.scancode_layout();
        let groups = type_text(text, layout).map_err(|(i, c)| RfbError::Unsupported {
            what: format!("character {} ({c:?}) of the text to type", i + 1),
        })?;
        let mut count = 0;
        let sent = async {
            for (i, group) in groups.iter().enumerate() {
                self.send_keys(group).await?;
                count += group.len();
                if i + 1 < groups.len() && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            Ok::<(), RfbError>(())
        }
        .await;
        // every modifier released, whatever happened above
        let released = self.send_keys(&release_modifiers(layout.is_some())).await;
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

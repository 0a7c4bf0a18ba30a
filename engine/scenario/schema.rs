//! JSON Schema (draft 2020-12) of scenario and routine files, for editors
//! (completion, hover docs, type checks). `smoke validate` stays the
//! authority: it also checks what a schema cannot say well (exactly one
//! action per step, routine inputs, references, template variables).
//! Property names come from the same tables the decoder uses.

use serde_json::{Map, Value, json};

use crate::scenario::model::{self, ACTIONS, CHECK_KINDS, MODIFIERS};
use crate::scenario::plan::{CALL_KEYS, SCENARIO_KEYS};
use crate::scenario::routine::{INPUT_KEYS, INPUT_TYPES, ROUTINE_KEYS};

const TEMPLATE: &str = "A minijinja template rendered before the run: `{{ var }}` keeps the value's type.";

fn defs() -> Value {
    let mut step_props = Map::new();
    for (k, doc) in ACTIONS.iter().chain(MODIFIERS.iter()) {
        let schema = match *k {
            "shell" => {
                json!({"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": false, "properties": {
                "command": {"type": "string"},
                "exit": {"anyOf": [{"const": "any"}, {"type": "integer"}, {"type": "array", "items": {"type": "integer"}}], "description": "Exit codes that count as success (default 0), or `any`."},
                "file": {"type": "string", "description": "A file pattern resolved on the target to exactly one file; {file} in the command becomes its quoted path."},
                "save": {"type": "string", "description": "Save the command's output into the results under this file name."}}, "required": ["command"]}]})
            }
            "launch" => {
                json!({"anyOf": [{"$ref": "#/$defs/command"}, {"type": "object", "additionalProperties": false, "properties": {
                "command": {"$ref": "#/$defs/command"},
                "process": {"type": "string", "description": "Process name to wait for (default: the program's base name)."},
                "until": {"$ref": "#/$defs/check"},
                "wait": {"$ref": "#/$defs/duration"},
                "file": {"type": "string", "description": "A file pattern resolved on the target to exactly one file; {file} in the command becomes its path."}}, "required": ["command"]}]})
            }
            "key" => {
                json!({"anyOf": [{"$ref": "#/$defs/keyCombo"}, {"type": "array", "items": {"$ref": "#/$defs/keyCombo"}},
                {"type": "object", "additionalProperties": false, "properties": {
                "combo": {"$ref": "#/$defs/keyCombo"},
                "hold": {"$ref": "#/$defs/duration", "description": "Keep the combo down this long, then release it."}}, "required": ["combo"]}]})
            }
            "key_down" | "key_up" => {
                json!({"anyOf": [{"$ref": "#/$defs/keyCombo"}, {"type": "array", "items": {"$ref": "#/$defs/keyCombo"}}]})
            }
            "type" => {
                json!({"anyOf": [{"type": ["string", "number"]}, {"type": "object", "additionalProperties": false, "properties": {
                "text": {"type": ["string", "number"]}, "interval": {"$ref": "#/$defs/duration"},
                "confirm": {"type": "boolean", "description": "After each chunk of 8 characters wait (up to the step timeout) until the screen changed; fail naming the lost text otherwise."}}, "required": ["text"]}]})
            }
            "drag" => {
                json!({"type": "object", "additionalProperties": false, "properties": {
                "from": {"$ref": "#/$defs/target"}, "to": {"$ref": "#/$defs/target"},
                "button": {"enum": ["left", "middle", "right"]},
                "path": {"enum": crate::input::pointer::PATH_KINDS, "description": "How the pointer travels (default linear)."},
                "duration": {"$ref": "#/$defs/duration", "description": "Time spent moving (default 300ms)."},
                "dwell": {"$ref": "#/$defs/duration", "description": "Pause after pressing and before releasing (default 100ms)."}}, "required": ["from", "to"]})
            }
            "scroll" => {
                json!({"anyOf": [{"enum": crate::input::pointer::SCROLL_DIRECTIONS}, {"type": "object", "additionalProperties": false, "properties": {
                "direction": {"enum": crate::input::pointer::SCROLL_DIRECTIONS},
                "count": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Wheel clicks (default 1)."},
                "at": {"$ref": "#/$defs/target"}}, "required": ["direction"]}]})
            }
            "click" | "move" => json!({"$ref": "#/$defs/target"}),
            "wait" | "timeout" => json!({"$ref": "#/$defs/duration"}),
            "wait_for" | "verify" | "verify_not" => json!({"$ref": "#/$defs/checks"}),
            "wait_still" => {
                json!({"anyOf": [{"$ref": "#/$defs/duration"}, {"type": "object", "additionalProperties": false, "properties": {
                "for": {"$ref": "#/$defs/duration"}, "region": {"$ref": "#/$defs/rect"},
                "tolerance": {"type": "integer", "minimum": 0, "maximum": 254, "description": "Channel differences up to this are no change."}}, "required": ["for"]}]})
            }
            "wait_change" => {
                json!({"anyOf": [{"const": true}, {"type": "object", "additionalProperties": false, "properties": {
                "region": {"$ref": "#/$defs/rect"},
                "min_pixels": {"type": "integer", "minimum": 1, "description": "Changed pixels needed (default 1)."},
                "tolerance": {"type": "integer", "minimum": 0, "maximum": 254}}}]})
            }
            "screenshot" => {
                json!({"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": false, "properties": {
                "name": {"type": "string"}, "region": {"$ref": "#/$defs/rect"}}, "required": ["name"]}]})
            }
            "routine" => json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"}),
            "if_visible" => {
                json!({"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": false, "properties": {
                "question": {"type": "string"}, "region": {"$ref": "#/$defs/rect"}}, "required": ["question"]}]})
            }
            "boot" => {
                json!({"anyOf": [{"const": true}, {"type": "string", "description": "The ready marker (a regular expression)."},
                {"type": "object", "additionalProperties": false, "properties": {
                "marker": {"type": "string", "description": "A regular expression for the line that says the system is up (default: a getty login prompt)."},
                "login": {"type": "boolean", "description": "With a marker: a login prompt counts as booted too (default true)."},
                "timeout": {"$ref": "#/$defs/duration", "description": "Budget of the whole boot (default 5m): TIMEOUT, exit 12."},
                "stall": {"$ref": "#/$defs/duration", "description": "Serial silence after the kernel started that is a stall (default 60s): STALLED, exit 11."},
                "failures": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}], "description": "More regular expressions that mean BOOT-FAILED (exit 10), besides kernel panic, oops, emergency mode, missing root."}}}]})
            }
            "expect" => {
                json!({"type": "object", "additionalProperties": false, "properties": {
                "serial": {"type": ["string", "number"], "description": "A regular expression the serial console's new output must match (escape sequences are stripped)."},
                "timeout": {"$ref": "#/$defs/duration"}}, "required": ["serial"]})
            }
            "send" => {
                json!({"type": "object", "additionalProperties": false, "properties": {
                "serial": {"type": ["string", "number"], "description": "Text typed into the serial console; \\n \\r \\t \\e \\0 \\xHH \\\\ are escapes."}},
                "required": ["serial"]})
            }
            "checkpoint" => {
                json!({"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,31}$"})
            }
            "then" => json!({"$ref": "#/$defs/steps", "minItems": 1}),
            "verify_input" => json!({"type": "string"}),
            "precheck_click" => json!({"type": "boolean"}),
            "label" => json!({"type": "string"}),
            "retries" => json!({"type": "integer", "minimum": 0, "maximum": 100}),
            "with" => json!({"type": "object"}),
            _ => json!({}),
        };
        let mut schema = schema;
        if let Some(o) = schema.as_object_mut() {
            o.insert("description".into(), json!(doc));
        }
        step_props.insert(k.to_string(), schema);
    }
    let mut check_props = Map::new();
    for (k, doc) in CHECK_KINDS {
        let schema = match *k {
            "ocr" => {
                json!({"anyOf": [{"type": ["string", "number"]}, {"type": "object", "additionalProperties": false, "properties": {
                "text": {"type": ["string", "number"]}, "regex": {"type": "string"}, "case_sensitive": {"type": "boolean"},
                "max_distance": {"type": "integer", "minimum": 0, "description": "Edits (Levenshtein) the text read may differ by."},
                "variants": {"type": "array", "items": {"enum": model::OCR_VARIANTS}, "description": "Preprocessing passes to try, in order."},
                "region": {"$ref": "#/$defs/rect"}}}]})
            }
            "ssim" => {
                json!({"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": false, "properties": {
                "reference": {"type": "string", "description": "Image under reference/<scenario>/<os>/ (or <family>/, or reference/)."},
                "region": {"$ref": "#/$defs/rect"},
                "mask": {"anyOf": [{"$ref": "#/$defs/rect"}, {"type": "array", "items": {"$ref": "#/$defs/rect"}}], "description": "Screen rectangles to ignore."},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                "window": {"enum": ["gaussian", "box"]},
                "colour": {"type": "boolean", "description": "Compare each RGB channel; the lowest score counts."},
                "regions": {"type": "array", "items": {"type": "object", "additionalProperties": false, "properties": {
                    "region": {"$ref": "#/$defs/rect"}, "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    "name": {"type": "string"}}, "required": ["region"]}, "description": "Parts with thresholds of their own."}},
                "required": ["reference"]}]})
            }
            "needle" => {
                json!({"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": false, "properties": {
                "name": {"type": "string", "description": "NAME.json + NAME.png under needles/<scenario>/<os>/ (or the fallbacks)."},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1, "description": "ZNCC threshold for every match area."},
                "region": {"$ref": "#/$defs/rect"}}, "required": ["name"]}]})
            }
            "vlm" => {
                json!({"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": false, "properties": {
                "question": {"type": "string", "description": "A yes/no question about the screen."},
                "region": {"$ref": "#/$defs/rect"},
                "accept_any": {"type": "boolean", "description": "Pass on the first yes among the samples."},
                "consistent": {"type": "integer", "minimum": 1, "maximum": 15, "description": "Ask this many samples; the majority decides."},
                "decide_first": {"$ref": "#/$defs/checks", "description": "Cheaper checks (ocr, needle, ssim): when one holds, the answer is yes without asking the model."}},
                "required": ["question"]}]})
            }
            _ => json!({}),
        };
        let mut schema = schema;
        if let Some(o) = schema.as_object_mut() {
            o.insert("description".into(), json!(doc));
        }
        check_props.insert(k.to_string(), schema);
    }
    let mut defaults_props = Map::new();
    for k in model::DEFAULTS_KEYS {
        let s = if k.ends_with("threshold") {
            json!({"type": "number", "minimum": 0, "maximum": 1})
        } else if *k == "retries" {
            json!({"type": "integer", "minimum": 0})
        } else if *k == "type_confirm" {
            json!({"type": "boolean", "description": "Check every type step's text on the screen (default false)."})
        } else {
            json!({"$ref": "#/$defs/duration"})
        };
        defaults_props.insert(k.to_string(), s);
    }
    let mut target_props = Map::new();
    for k in model::TARGET_KEYS {
        let s = match *k {
            "x" | "y" => json!({"type": "integer", "minimum": 0}),
            "at" => json!({"$ref": "#/$defs/point"}),
            "text" => {
                json!({"type": ["string", "number"], "description": "Text found by OCR; the click goes to its centre."})
            }
            "regex" => json!({"type": "string"}),
            "case_sensitive" | "double" => json!({"type": "boolean"}),
            "image" => json!({"type": "string", "description": "An image found on screen by template match."}),
            "needle" => {
                json!({"type": "string", "description": "A needle found on screen; the click goes to its point."})
            }
            "point" => json!({"type": "string", "description": "The id of the needle's click point."}),
            "max_distance" => {
                json!({"type": "integer", "minimum": 0, "description": "Edits the OCR reading may differ by."})
            }
            "threshold" => json!({"type": "number", "minimum": 0, "maximum": 1}),
            "region" => json!({"$ref": "#/$defs/rect"}),
            "offset" => json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}),
            "button" => json!({"enum": ["left", "middle", "right"]}),
            "locate" => {
                json!({"type": "string", "description": "A description the vision-language model finds on the screen (grounding)."})
            }
            "path" => {
                json!({"enum": crate::input::pointer::PATH_KINDS, "description": "Move steps: travel along this path (default bezier once duration is given)."})
            }
            "duration" => {
                json!({"$ref": "#/$defs/duration", "description": "Move steps: time the move takes (default 300ms once path is given)."})
            }
            _ => json!({}),
        };
        target_props.insert(k.to_string(), s);
    }
    json!({
        "duration": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": "^(\\d+(\\.\\d+)?(ms|s|m|h|sec|min)?)+$"}, {"$ref": "#/$defs/template"}],
                     "description": "500ms, 2s, 1.5s, 1m30s, or a number of seconds."},
        "template": {"type": "string", "pattern": "\\{\\{", "description": TEMPLATE},
        "rect": {"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4, "maxItems": 4},
                           {"type": "object", "additionalProperties": false, "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "w": {"type": "integer"}, "h": {"type": "integer"}}, "required": ["x", "y", "w", "h"]},
                           {"$ref": "#/$defs/template"}], "description": "[x, y, width, height] in screen pixels."},
        "point": {"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2},
                            {"type": "object", "additionalProperties": false, "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]},
                            {"$ref": "#/$defs/template"}]},
        "command": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1}]},
        "keyCombo": {"type": "string", "description": "ctrl+alt+t, shift+tab, F5, enter, a single character..."},
        "target": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "string"}, {"type": "object", "additionalProperties": false, "properties": target_props}]},
        "check": {"type": "object", "additionalProperties": false, "minProperties": 1, "maxProperties": 1, "properties": check_props},
        "checks": {"anyOf": [{"$ref": "#/$defs/check"}, {"type": "array", "items": {"$ref": "#/$defs/check"}, "minItems": 1}]},
        "step": {"type": "object", "additionalProperties": false, "minProperties": 1, "properties": step_props},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
        "defaults": {"type": "object", "additionalProperties": false, "properties": defaults_props},
    })
}

/// The schema of scenario files.
pub fn scenario() -> Value {
    let mut props = Map::new();
    for k in SCENARIO_KEYS {
        let s = match *k {
            "name" | "description" => json!({"type": "string"}),
            "tags" => json!({"type": "array", "items": {"type": "string"}}),
            "vars" => {
                json!({"type": "object", "description": "Variables for templates; the inventory's vars and --var override them."})
            }
            "defaults" => json!({"$ref": "#/$defs/defaults"}),
            "steps" => json!({"$ref": "#/$defs/steps", "minItems": 1}),
            "cleanup" => {
                json!({"$ref": "#/$defs/steps", "description": "Steps that always run at the end, pass or fail."})
            }
            "forensics" => {
                json!({"anyOf": [{"const": false}, {"type": "object", "additionalProperties": false, "properties": {
                "routine": {"type": "string"}, "with": {"type": "object"}}}],
                "description": "Evidence collected from the target after a failure (default: the `forensics` routine for the target's OS, if any); false to turn it off."})
            }
            "rewind_on_failure" => {
                json!({"type": "boolean", "description": "VM targets: a failed step after a checkpoint rolls the VM back to it and goes on after it, once per checkpoint."})
            }
            "retain_checkpoints" => {
                json!({"type": "integer", "minimum": 1, "maximum": 100, "description": "Snapshots of the latest checkpoints kept while running (default 3); older ones are deleted."})
            }
            "keep_checkpoints" => {
                json!({"type": "boolean", "description": "Leave the retained checkpoint snapshots on the VM after the run (for `smoke run --from-checkpoint`)."})
            }
            _ => json!({}),
        };
        props.insert(k.to_string(), s);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://smoke.invalid/schema/scenario.json",
        "title": "smoke scenario",
        "type": "object",
        "additionalProperties": false,
        "required": ["steps"],
        "properties": props,
        "$defs": defs(),
    })
}

/// The schema of routine files.
pub fn routine() -> Value {
    let mut props = Map::new();
    for k in ROUTINE_KEYS {
        let s = match *k {
            "description" => json!({"type": "string"}),
            "inputs" => json!({"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": false,
                "properties": INPUT_KEYS.iter().map(|k| (k.to_string(), match *k {
                    "type" => json!({"enum": INPUT_TYPES}),
                    "required" => json!({"type": "boolean"}),
                    "description" => json!({"type": "string"}),
                    _ => json!({}),
                })).collect::<Map<String, Value>>()}}),
            "steps" => json!({"$ref": "#/$defs/steps", "minItems": 1}),
            _ => json!({}),
        };
        props.insert(k.to_string(), s);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://smoke.invalid/schema/routine.json",
        "title": "smoke routine",
        "type": "object",
        "additionalProperties": false,
        "required": ["steps"],
        "properties": props,
        "$defs": defs(),
    })
}

/// Keys a routine call may have (documented in the step schema through `routine` and `with`).
pub fn call_keys() -> &'static [&'static str] {
    CALL_KEYS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value) -> Vec<String> {
        v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    fn keys_of(v: &Value) -> Vec<String> {
        keys(v)
    }

    #[test]
    fn schema_lists_exactly_the_keys_the_decoder_accepts() {
        let s = scenario();
        let step = &s["$defs"]["step"]["properties"];
        let mut want: Vec<String> = model::step_keys().iter().map(|k| k.to_string()).collect();
        want.sort();
        let mut got = keys(step);
        got.sort();
        assert_eq!(got, want);
        let mut top = keys(&s["properties"]);
        top.sort();
        let mut want_top: Vec<String> = SCENARIO_KEYS.iter().map(|k| k.to_string()).collect();
        want_top.sort();
        assert_eq!(top, want_top);
        for k in model::TARGET_KEYS {
            assert!(s["$defs"]["target"]["anyOf"][2]["properties"].get(*k).is_some_and(|v| v != &json!({})), "{k}");
        }
        for (k, _) in ACTIONS.iter().chain(MODIFIERS.iter()) {
            assert!(step[*k].get("description").is_some(), "{k} lacks a description");
        }
        assert!(call_keys().iter().all(|k| step.get(*k).is_some()));
        for k in SCENARIO_KEYS {
            assert_ne!(s["properties"][*k], json!({}), "scenario key {k} has no schema");
        }
        for (k, keys) in
            [("expect", model::SERIAL_EXPECT_KEYS), ("send", model::SERIAL_SEND_KEYS), ("boot", model::BOOT_KEYS)]
        {
            let obj = step[k].get("properties").or_else(|| step[k]["anyOf"][2].get("properties"));
            let mut got = obj.map(keys_of).unwrap_or_default();
            got.sort();
            let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "{k}");
        }
        assert_eq!(keys(&routine()["properties"]).len(), ROUTINE_KEYS.len());
    }
}

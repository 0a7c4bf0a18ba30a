//! The scenario language: YAML scenarios and routines, parsed with positions,
//! rendered with minijinja, checked against a strict schema and expanded into
//! a validated [`plan::Plan`] before anything runs.
pub mod decode;
pub mod diagnostic;
pub mod model;
pub mod node;
pub mod plan;
pub mod routine;
pub mod schema;
pub mod source;
pub mod template;
pub mod yaml;

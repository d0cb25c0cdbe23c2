//! The aggregate engine (issue 14): tables defined by a schema per realm,
//! source rows published to a topic and checked against the table's JSON
//! Schema, aggregate tables maintained from the rows propagated into them,
//! and a retained change event per row on `<table>.<key...>`.
//!
//! - `decimal`: exact decimal sums (money comes out to the cent).
//! - `schema`: the schema file, checked and compiled at start.
//! - `engine`: contributions and aggregate rows, pure.

pub mod decimal;
pub mod engine;
pub mod schema;

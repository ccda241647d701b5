//! backplan: declarative backups of a production stack.
//!
//! One YAML policy declares sources, destinations, schedules and retention;
//! [`plan::plan`] compares it with the [`inventory::Inventory`] the destinations hold
//! and returns a [`plan::Plan`]; [`apply`] carries the plan out. See `docs/` and
//! `DESIGN.md` for the whole picture.

pub mod apply;
#[cfg(test)]
mod architecture;
pub mod cli;
pub mod commands;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod graph;
pub mod inventory;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod render;
pub mod repo;
pub mod restore;
pub mod sources;
pub mod status;
pub mod verify;

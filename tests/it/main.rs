//! The integration tests, in one binary: one link instead of one per file, which is
//! most of the build time of `cargo test` on a small machine. Each module is one area;
//! `common` is the harness (sandboxes, throwaway PostgreSQL, Redis, S3, SSH, WebDAV and
//! Azure servers). `cargo test --test it MODULE::` runs one area.

mod common;

mod apply_engine;
mod cli;
mod daemon;
mod deploy;
mod drill;
mod due;
mod error_codes;
mod memory_backend;
mod notify;
mod pg_harness;
mod plan_engine;
mod policies;
mod postgres;
mod redis;
mod repository;
mod s3;
mod services;
mod status;
mod validate;

//! distribot: a workflow engine that moves flows through phases, fans each
//! phase out into jobs on queues, and fans the results back in.
//!
//! The crate is layered so that the decisions are pure and the I/O sits at
//! the edges:
//!
//! - [`definition`] turns workflow JSON into a validated [`definition::Workflow`];
//! - [`rules`] holds the engine's decisions as plain functions;
//! - [`store`] and [`broker`] are the backend traits, with their adapters;
//! - [`handler`] is the user's code: Rust handlers and command handlers;
//! - [`runtime`] runs engines, workers and clients over any backend;
//! - [`schedule`] reads cron cadences and decides what a due tick does.
//!
//! `ARCHITECTURE.md` in the repository follows one job through these parts.

pub mod api;
pub mod broker;
pub mod clock;
pub mod config;
pub mod definition;
pub mod graph;
pub mod handler;
pub mod ids;
mod json;
pub mod metrics;
pub mod model;
pub mod rules;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod sync;
pub mod time;
pub mod trace;
pub mod version;
pub mod views;
pub mod webhook;

//! The benchmark harness behind `cargo bench` and `dp-bench compare`, split as criterion is:
//! `stats` is pure maths on samples, `analysis` turns run directories into a `summary::Summary`,
//! `plot` and `report` only consume summaries, and `runner` launches the configurations.

pub mod allreduce;
pub mod analysis;
pub mod padding;
pub mod plot;
pub mod report;
pub mod runner;
pub mod stats;
pub mod summary;

//! Outbound work: in-call actions (confirmation tokens, the executors that carry actions out) and
//! signed deliveries to the operator's sinks.

pub mod confirm;
pub mod executors;
pub mod outbound;
pub mod sink;

//! In-call actions: confirmation tokens and the executors that carry actions out.

pub mod confirm;
pub mod executors;
pub mod outbound;

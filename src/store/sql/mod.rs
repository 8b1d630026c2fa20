//! What both backends share: the log's rows, the projections and their queries, billing, tenant
//! keys, the store interface over a connection (`reads`) and the single writer with group commit,
//! all on the portable SQL surface (`db`). The backends add opening, migrations and what their
//! dialects do not share.

pub mod billing;
pub mod db;
pub mod keys;
pub mod log;
pub mod projections;
pub mod queries;
pub mod reads;
pub mod snapshots;
pub mod store;
pub mod tenants;
pub mod verify;
pub mod writer;

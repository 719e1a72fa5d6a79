//! The io_uring runtime: the only module with `unsafe` and syscalls.
//!
//! - [`sys`]: sockets, eventfd, limits, signals, through one `syscall!` helper.
//! - [`ring`]: ring setup, ops → SQEs, completions → named events, the `user_data` layout.
//! - [`buffers`]: the provided-buffer ring for receives and the pooled send queues.
//! - [`budget`]: reading less when a connection's queued output is high, and the memory budget.
//! - [`slots`]: the slab of connections, their phases and flags.
//! - [`tls`]: server-side TLS on rustls's unbuffered API (decrypt and encrypt glue).
//! - `worker`: the event loop of one worker thread.

pub mod budget;
pub mod buffers;
pub mod client;
pub mod ring;
pub mod slots;
pub mod sys;
pub mod tls;
pub mod tls_client;
pub(crate) mod worker;

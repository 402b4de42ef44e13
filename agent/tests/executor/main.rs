//! The executor against real processes, a real HTTP server and paused time.

mod common;
mod exec;
mod http;
mod sim;

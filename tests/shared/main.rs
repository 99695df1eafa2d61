//! The shared limit against a real `redis-server` (feature `redis`): several
//! limiters in one process stand for replicas (each has its own connection,
//! process id and background tasks, exactly as separate processes would; a
//! limiter on its own runtime, shut down, stands for a killed process). The
//! proxy's tests run the same with real processes and kill -9.
#![cfg(feature = "redis")]

mod basics;
mod failures;
mod invariants;
mod order;
mod redis;
mod review;
mod support;

//! The shared limit against a real `redis-server` (feature `redis`): several
//! limiters in one process stand for replicas (each has its own connection,
//! process id and background tasks, exactly as separate processes would);
//! tests/e2e has the same with real processes and kill -9.
#![cfg(feature = "redis")]

mod redis;
mod basics;

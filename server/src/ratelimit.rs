//! Rate limits on what devices send: messages and bytes, per connection and
//! per user (all of a user's connections together), with governor's GCRA.
//!
//! A connection over a limit gets a protocol `error` and is closed (the
//! HTTP fallback answers 429); the device reconnects with its backoff.
//! Limits are per user and per connection, so one flooding user never slows
//! anyone else down: the document actors only see what got through.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The limits, in units per second, and how many seconds of them may come
/// in one burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub conn_messages_per_sec: u32,
    pub conn_bytes_per_sec: u32,
    pub user_messages_per_sec: u32,
    pub user_bytes_per_sec: u32,
    /// A burst may be this many seconds' worth (at least one frame's worth
    /// of bytes, so a legitimate large frame always fits).
    pub burst_secs: u32,
}

impl Default for RateLimits {
    /// Far above what a phone typing or catching up sends (a reconnect
    /// after a month offline is a handful of large frames), far below what
    /// would let one user hold the server's CPU.
    fn default() -> Self {
        Self {
            conn_messages_per_sec: 200,
            conn_bytes_per_sec: 2 * 1024 * 1024,
            user_messages_per_sec: 400,
            user_bytes_per_sec: 4 * 1024 * 1024,
            burst_secs: 5,
        }
    }
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    ConnectionMessages,
    ConnectionBytes,
    UserMessages,
    UserBytes,
}

impl Exceeded {
    pub fn as_str(self) -> &'static str {
        match self {
            Exceeded::ConnectionMessages => "messages per connection",
            Exceeded::ConnectionBytes => "bytes per connection",
            Exceeded::UserMessages => "messages per user",
            Exceeded::UserBytes => "bytes per user",
        }
    }
}

fn quota(per_sec: u32, burst_secs: u32, at_least: u32) -> Quota {
    let rate = NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = per_sec
        .max(1)
        .saturating_mul(burst_secs.max(1))
        .max(at_least);
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

fn n(value: usize) -> NonZeroU32 {
    NonZeroU32::new(u32::try_from(value).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

/// The per-user limiters, shared by every connection.
#[derive(Debug)]
pub struct UserLimits {
    limits: RateLimits,
    max_frame: u32,
    messages: DefaultKeyedRateLimiter<String>,
    bytes: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl UserLimits {
    pub fn new(limits: RateLimits, max_frame_bytes: usize) -> Self {
        let max_frame = u32::try_from(max_frame_bytes).unwrap_or(u32::MAX);
        Self {
            limits,
            max_frame,
            messages: RateLimiter::keyed(quota(limits.user_messages_per_sec, limits.burst_secs, 1)),
            bytes: RateLimiter::keyed(quota(
                limits.user_bytes_per_sec,
                limits.burst_secs,
                max_frame,
            )),
            checks: AtomicU64::new(0),
        }
    }

    /// The limiter of one new connection.
    pub fn connection(&self) -> ConnLimits {
        ConnLimits {
            messages: RateLimiter::direct(quota(
                self.limits.conn_messages_per_sec,
                self.limits.burst_secs,
                1,
            )),
            bytes: RateLimiter::direct(quota(
                self.limits.conn_bytes_per_sec,
                self.limits.burst_secs,
                self.max_frame,
            )),
        }
    }

    /// Counts one inbound frame of `len` bytes from `user` on `conn`.
    pub fn check(&self, conn: &ConnLimits, user: &str, len: usize) -> Result<(), Exceeded> {
        // Forget users that have been quiet, now and then, so the keyed
        // state does not grow with every user ever seen.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.messages.retain_recent();
            self.bytes.retain_recent();
        }
        if conn.messages.check().is_err() {
            return Err(Exceeded::ConnectionMessages);
        }
        if !matches!(conn.bytes.check_n(n(len)), Ok(Ok(_))) {
            return Err(Exceeded::ConnectionBytes);
        }
        let key = user.to_owned();
        if self.messages.check_key(&key).is_err() {
            return Err(Exceeded::UserMessages);
        }
        if !matches!(self.bytes.check_key_n(&key, n(len)), Ok(Ok(_))) {
            return Err(Exceeded::UserBytes);
        }
        Ok(())
    }
}

/// One connection's limiters.
#[derive(Debug)]
pub struct ConnLimits {
    messages: DefaultDirectRateLimiter,
    bytes: DefaultDirectRateLimiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_and_a_flood_is_stopped_per_connection_and_per_user() {
        let limits = RateLimits {
            conn_messages_per_sec: 10,
            conn_bytes_per_sec: 1000,
            user_messages_per_sec: 15,
            user_bytes_per_sec: 100_000,
            burst_secs: 1,
        };
        let users = UserLimits::new(limits, 500);
        let a = users.connection();
        for _ in 0..10 {
            assert_eq!(users.check(&a, "olena", 10), Ok(()));
        }
        assert_eq!(
            users.check(&a, "olena", 10),
            Err(Exceeded::ConnectionMessages)
        );
        // Another connection of the same user: its own budget, until the
        // user's total runs out.
        let b = users.connection();
        let mut passed = 0;
        while users.check(&b, "olena", 10).is_ok() {
            passed += 1;
        }
        assert!(passed < 10, "the user's limit stops the second connection");
        // Another user is untouched.
        let c = users.connection();
        assert_eq!(users.check(&c, "ivan", 10), Ok(()));
        // Bytes: one frame of the largest size always fits a fresh budget;
        // two do not.
        let d = users.connection();
        assert_eq!(users.check(&d, "maria", 1000), Ok(()));
        assert_eq!(
            users.check(&d, "maria", 1000),
            Err(Exceeded::ConnectionBytes)
        );
    }
}

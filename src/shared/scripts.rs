//! The server-side scripts (Lua, run atomically by Redis), each the common
//! prelude (`lua/prelude.lua`: the key layout and the helpers) followed by
//! its own body. Loaded by hash (`EVALSHA`, loading on `NOSCRIPT`).

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// Every script of a shared limit.
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) release: Script,
    pub(crate) cancel: Script,
    pub(crate) renew: Script,
    pub(crate) adopt: Script,
    pub(crate) poll: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            acquire: with_prelude(include_str!("lua/acquire.lua")),
            release: with_prelude(include_str!("lua/release.lua")),
            cancel: with_prelude(include_str!("lua/cancel.lua")),
            renew: with_prelude(include_str!("lua/renew.lua")),
            adopt: with_prelude(include_str!("lua/adopt.lua")),
            poll: with_prelude(include_str!("lua/poll.lua")),
        }
    }
}

/// The Redis keys of the limit named `name`, in the order the prelude reads
/// them (`KEYS[1..8]`), all with the hash tag `{name}`.
pub(crate) fn keys(name: &str) -> [String; 8] {
    [
        "held", "leases", "use", "queue", "deadline", "waiters", "fair", "members",
    ]
    .map(|part| format!("{{{name}}}:{part}"))
}

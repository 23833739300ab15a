//! The decision scripts, assembled from `lua/`, and the call that runs one.
//!
//! Six constant texts: one per algorithm for a single policy (the common call), and one that
//! decides any mix of policies all-or-nothing. Redis therefore caches exactly six scripts
//! whatever the keys (RELIABILITY I2). All six take the same KEYS and ARGV and give the same reply.

use std::sync::LazyLock;

use floodwall_core::{Algorithm, Mode, Policy};

/// `#!lua` (Redis 7): a script is refused up front when Redis is out of memory, never
/// half-written, and may touch declared keys only.
macro_rules! shebang {
    () => {
        "#!lua\n"
    };
}

/// The single-policy script of one algorithm: the helpers, that module's six functions and the
/// straight-line driver. The script body runs anew on every call and each function in it is a
/// closure built per call, so leaving the other modules out is most of its speed.
macro_rules! single {
    ($name:literal) => {
        concat!(
            shebang!(),
            "local ALGORITHM = '",
            $name,
            "'\n",
            include_str!("../../lua/prelude.lua"),
            include_str!(concat!("../../lua/", $name, ".lua")),
            include_str!("../../lua/single.lua"),
        )
    };
}

/// One algorithm module wrapped in a constructor returning its six functions, for the
/// multi-policy script: a call builds only the modules its policies use.
macro_rules! module {
    ($name:literal) => {
        concat!(
            "local function ",
            $name,
            "_module()\n",
            include_str!(concat!("../../lua/", $name, ".lua")),
            "return { load = load, remaining = remaining, wait = wait, consume = consume, ",
            "reset_after = reset_after, store = store }\nend\n",
        )
    };
}

/// The scripts' texts: the five single-policy ones in [`Algorithm::ALL`] order, then the
/// multi-policy one.
pub(crate) const SOURCES: [&str; 6] = [
    single!("fixed_window"),
    single!("sliding_log"),
    single!("sliding_window"),
    single!("token_bucket"),
    single!("gcra"),
    concat!(
        shebang!(),
        include_str!("../../lua/prelude.lua"),
        module!("fixed_window"),
        module!("sliding_log"),
        module!("sliding_window"),
        module!("token_bucket"),
        module!("gcra"),
        include_str!("../../lua/decide.lua"),
    ),
];

/// The multi-policy script's index in [`SOURCES`].
const MULTI: usize = 5;

/// Each script's SHA-1, as EVALSHA wants it.
static SHA1: LazyLock<[String; 6]> =
    LazyLock::new(|| SOURCES.map(|source| ::redis::Script::new(source).get_hash().to_owned()));

/// The script that decides `policies`: its algorithm's own for one policy, else the general one.
fn script_for(policies: &[Policy]) -> usize {
    match policies {
        [policy] => match policy.algorithm() {
            Algorithm::FixedWindow => 0,
            Algorithm::SlidingLog => 1,
            Algorithm::SlidingWindow => 2,
            Algorithm::TokenBucket => 3,
            Algorithm::Gcra => 4,
        },
        _ => MULTI,
    }
}

/// Builds `EVALSHA` (or, after NOSCRIPT, `EVAL`) of the script that decides `policies`.
pub(crate) fn command(
    with_source: bool,
    keys: &[String],
    now_us: Option<u64>,
    cost: u64,
    token: &str,
    policies: &[Policy],
) -> ::redis::Cmd {
    let script = script_for(policies);
    let mut cmd = ::redis::Cmd::new();
    if with_source {
        cmd.arg("EVAL").arg(SOURCES[script]);
    } else {
        cmd.arg("EVALSHA").arg(SHA1[script].as_str());
    }
    cmd.arg(keys.len()).arg(keys);
    match now_us {
        Some(now_us) => cmd.arg(now_us),
        None => cmd.arg(""),
    };
    cmd.arg(cost).arg(token);
    for policy in policies {
        cmd.arg(policy.algorithm().as_str())
            .arg(policy.limit())
            .arg(policy.period_us())
            .arg(policy.capacity())
            .arg(u8::from(policy.mode() == Mode::Shadow));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_scripts_follow_algorithm_order() {
        for (index, algorithm) in Algorithm::ALL.into_iter().enumerate() {
            let marker = format!("local ALGORITHM = '{}'", algorithm.as_str());
            assert!(SOURCES[index].contains(&marker), "{algorithm}");
            let policy = Policy::new("p", algorithm, 1, std::time::Duration::from_secs(1));
            assert_eq!(script_for(&[policy.unwrap()]), index);
        }
        assert!(!SOURCES[MULTI].contains("local ALGORITHM"));
    }
}

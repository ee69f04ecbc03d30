//! What replicas share on Redis (or Valkey), SPEC 12: the account's quotas and SendEmail's
//! idempotency keys. Each replica still counts locally too, for when Redis is away.
//!
//! - **One atomic check per message.** A Lua script ([`SCRIPT`], loaded once, then called
//!   by its SHA with EVALSHA) checks and reserves both limits at once on Redis's own clock
//!   (`TIME`), so the replicas' clocks do not matter: the send rate as GCRA (generic cell
//!   rate algorithm: a theoretical arrival time advanced by the message's recipients times
//!   the emission interval, with one second's worth of burst), and the 24-hour quota as
//!   per-minute buckets in a hash with a running total (buckets older than 24 hours are
//!   dropped as the window moves). Either both are reserved or neither. Both keys carry
//!   one hash tag (`{account}`), so the script also runs on Redis Cluster.
//! - **Refunds**: the relay gives a reservation back when the upstream refuses the
//!   message, into the minute bucket it was counted in.
//! - **Idempotency**: `SET key pending NX PX`; the winner stores its answer, a retry on
//!   any replica waits for it (polling) and replays it; another body under the same key is
//!   refused.
//! - **When Redis is down or slow** (no answer within `timeout`): a circuit breaker stops
//!   asking for a while (250 ms, doubling to 5 s while failures go on), and the relay
//!   does what `on_unavailable` says. The connection is a redis-rs `ConnectionManager`,
//!   made lazily and reconnecting by itself; a restarted Redis is picked up without a
//!   restart of sesrelay (its script is loaded again on NOSCRIPT).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::account::Throttle;
use crate::config::{AccountLimits, SharedAccountConfig};

/// The quota script. KEYS: the rate key (GCRA's theoretical arrival time, in µs) and the
/// day key (a hash: minute number → recipients, `t` the total, `o` the oldest minute
/// counted). ARGV: the operation (`reserve`, `refund`, `read`), the recipients, the rate
/// (recipients per second, 0 for none), the 24-hour quota (0 for none), and for `refund`
/// the minute the reservation was counted in. Returns `{status, total, minute}`: status 0
/// reserved (or done), 1 over the rate, 2 over the quota; `total` the recipients counted
/// in the last 24 hours.
pub const SCRIPT: &str = r#"
local rate_key, day_key = KEYS[1], KEYS[2]
local op = ARGV[1]
local n = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local max24 = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local minute = math.floor(tonumber(clock[1]) / 60)
local horizon = minute - 1439

-- The day: drop the minutes that left the window, keeping the total.
local total = tonumber(redis.call('HGET', day_key, 't') or '0')
local oldest = tonumber(redis.call('HGET', day_key, 'o') or tostring(horizon))
if oldest < horizon then
  if horizon - oldest > 1440 then
    redis.call('DEL', day_key)
    total = 0
  else
    for m = oldest, horizon - 1 do
      local c = redis.call('HGET', day_key, tostring(m))
      if c then
        total = total - tonumber(c)
        redis.call('HDEL', day_key, tostring(m))
      end
    end
  end
  oldest = horizon
end
if total < 0 then total = 0 end

local interval = 0
if rate > 0 then interval = 1000000 / rate end
local tat = tonumber(redis.call('GET', rate_key) or '0')

local function save_day()
  redis.call('HSET', day_key, 't', string.format('%d', total), 'o', string.format('%d', oldest))
  redis.call('PEXPIRE', day_key, 90000000)
end

local function save_tat(value)
  if value > now then
    redis.call('SET', rate_key, string.format('%d', value), 'PX', math.floor((value - now) / 1000) + 1000)
  else
    redis.call('DEL', rate_key)
  end
end

if op == 'reserve' then
  if max24 > 0 and total + n > max24 then
    save_day()
    return {2, total, minute}
  end
  if rate > 0 then
    -- One second's worth of recipients may go at once (one recipient when the rate is
    -- under one a second); a message larger than that passes when nothing is pending.
    local burst = math.max(1000000, interval)
    local new_tat = math.max(tat, now) + n * interval
    if tat > now and new_tat - now > burst then
      save_day()
      return {1, total, minute}
    end
    save_tat(math.floor(new_tat))
  end
  redis.call('HINCRBY', day_key, tostring(minute), n)
  total = total + n
  save_day()
  return {0, total, minute}
elseif op == 'refund' then
  local counted_in = ARGV[5]
  local c = tonumber(redis.call('HGET', day_key, counted_in) or '0')
  local back = math.min(c, n)
  if back > 0 then
    redis.call('HINCRBY', day_key, counted_in, -back)
    total = total - back
  end
  if rate > 0 and tat > 0 then
    save_tat(math.floor(tat - n * interval))
  end
  save_day()
  return {0, total, minute}
else
  save_day()
  return {0, total, minute}
end
"#;

/// What a quota check on Redis found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedCheck {
    /// Reserved, counted in this minute (for the refund).
    Reserved {
        minute: i64,
    },
    Throttled(Throttle),
    /// No answer from Redis (down, slow, the breaker open): `on_unavailable` decides.
    Unavailable(String),
}

/// What the breaker knows of Redis.
#[derive(Debug, Default)]
struct Breaker {
    /// Failures in a row.
    failures: u32,
    /// Redis is not asked before this.
    open_until: Option<Instant>,
}

/// The first pause after a failure; doubled while failures go on, up to [`BREAK_MAX`].
const BREAK_MIN: Duration = Duration::from_millis(250);
const BREAK_MAX: Duration = Duration::from_secs(5);

/// The shared store of one `[account.shared]` configuration.
pub struct SharedStore {
    pub settings: SharedAccountConfig,
    manager: ConnectionManager,
    script: redis::Script,
    rate_key: String,
    day_key: String,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `[account.shared]` could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("account.shared.redis_url: {0}")]
pub struct SharedError(String);

impl SharedStore {
    /// Prepares the connection (made on first use, not now: a Redis that is down at start
    /// is `on_unavailable`'s case like any other).
    pub fn new(settings: &SharedAccountConfig) -> Result<SharedStore, SharedError> {
        let client = redis::Client::open(settings.redis_url.as_str())
            .map_err(|e| SharedError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| SharedError(e.to_string()))?;
        let prefix = &settings.key_prefix;
        Ok(SharedStore {
            settings: settings.clone(),
            manager,
            script: redis::Script::new(SCRIPT),
            rate_key: format!("{prefix}{{account}}:rate"),
            day_key: format!("{prefix}{{account}}:day"),
            breaker: Mutex::new(Breaker::default()),
        })
    }

    /// The key of an idempotency record.
    pub fn idempotency_key(&self, invocation: &str) -> String {
        format!("{}idempotency:{invocation}", self.settings.key_prefix)
    }

    /// A connection to use now, or why not: the breaker may be open.
    fn connection(&self) -> Result<ConnectionManager, String> {
        let breaker = self.lock_breaker();
        if let Some(until) = breaker.open_until
            && Instant::now() < until
        {
            return Err("Redis is not asked for a while after failing (circuit open)".to_owned());
        }
        Ok(self.manager.clone())
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `call` against Redis within `timeout`, through the breaker.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection()?;
        let result = match tokio::time::timeout(self.settings.timeout, call(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "Redis did not answer within {:?}",
                self.settings.timeout
            )),
        };
        let mut breaker = self.lock_breaker();
        match &result {
            Ok(_) => {
                if breaker.failures > 0 {
                    tracing::info!("Redis answers again: the account is shared again");
                }
                *breaker = Breaker::default();
            }
            Err(e) => {
                let pause = BREAK_MIN
                    .saturating_mul(1 << breaker.failures.min(5))
                    .min(BREAK_MAX);
                if breaker.failures == 0 {
                    tracing::warn!(error = %e, on_unavailable = %self.settings.on_unavailable, "Redis unavailable");
                }
                breaker.failures = breaker.failures.saturating_add(1);
                breaker.open_until = Some(Instant::now() + pause);
            }
        }
        result
    }

    async fn run_script(
        &self,
        op: &str,
        recipients: u64,
        limits: &AccountLimits,
        minute: i64,
    ) -> Result<(i64, u64, i64), String> {
        let (rate_key, day_key) = (self.rate_key.clone(), self.day_key.clone());
        let script = &self.script;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(rate_key)
            .key(day_key)
            .arg(op)
            .arg(recipients)
            .arg(limits.max_send_rate.to_string())
            .arg(limits.max_24_hour_send)
            .arg(minute);
        self.call(|mut connection| async move {
            let (status, total, minute): (i64, i64, i64) =
                invocation.invoke_async(&mut connection).await?;
            Ok((status, u64::try_from(total).unwrap_or(0), minute))
        })
        .await
    }

    /// Checks and reserves `recipients` against both limits, on Redis.
    pub async fn reserve(&self, limits: &AccountLimits, recipients: u64) -> SharedCheck {
        match self.run_script("reserve", recipients, limits, 0).await {
            Ok((0, _, minute)) => SharedCheck::Reserved { minute },
            Ok((1, _, _)) => SharedCheck::Throttled(Throttle::Rate),
            Ok((_, _, _)) => SharedCheck::Throttled(Throttle::Quota),
            Err(e) => SharedCheck::Unavailable(e),
        }
    }

    /// Gives back `recipients` counted in `minute`.
    pub async fn refund(
        &self,
        limits: &AccountLimits,
        recipients: u64,
        minute: i64,
    ) -> Result<(), String> {
        self.run_script("refund", recipients, limits, minute)
            .await
            .map(|_| ())
    }

    /// Whether Redis answers a PING now (through the breaker).
    pub async fn ping(&self) -> Result<(), String> {
        self.call(|mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(|_| ())
        })
        .await
    }

    /// The recipients counted by every replica in the last 24 hours.
    pub async fn sent_last_24_hours(&self, limits: &AccountLimits) -> Result<u64, String> {
        self.run_script("read", 0, limits, 0)
            .await
            .map(|(_, total, _)| total)
    }
}
